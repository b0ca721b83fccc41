// Random sequences of reads, writes, zeroes, trims, flushes, cache and
// block-status queries through libnbd against nbdkit's memory plugin and
// nbdstate's, comparing every reply and every byte.
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { run, startServer, type RunningServer } from "../helpers/server.js";
import { hasTool, PYTHON, requirePythonLibnbd, requireTool } from "../helpers/tools.js";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const script = fileURLToPath(new URL("./differential.py", import.meta.url));
const ready = requirePythonLibnbd() && requireTool("nbdkit", "nbdkit");
const SIZE = 8 * 1024 * 1024;

describe.skipIf(!ready)("differential against nbdkit", () => {
  let ours: RunningServer;
  let ref: ChildProcess;
  let dir: string;
  beforeAll(async () => {
    ours = await startServer(["memory", `size=${SIZE}`]);
    dir = mkdtempSync(join(tmpdir(), "nbdkit-ref-"));
    ref = spawn("nbdkit", ["-f", "-U", join(dir, "s"), "memory", `size=${SIZE}`], { stdio: "ignore" });
    for (let i = 0; i < 100 && !existsSync(join(dir, "s")); i++) await new Promise((r) => setTimeout(r, 50));
  });
  afterAll(async () => {
    await ours?.stop();
    ref?.kill();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  for (const seed of [1, 2, 3]) {
    it(`seed ${seed}: 400 random requests give the same replies and the same bytes`, async () => {
      expect(hasTool("nbdkit")).toBe(true);
      const r = await run(PYTHON, [script, `nbd+unix:///?socket=${join(dir, "s")}`, ours.uri, String(seed), "400", String(SIZE)], { timeoutMs: 60000 });
      expect(r.stdout + r.stderr).toContain("OK 400");
    });
  }
});
