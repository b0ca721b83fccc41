// Durability: data acknowledged after FLUSH or with FUA survives SIGKILL
// of the server (file plugin). Graceful shutdown: SIGTERM answers what was
// received, removes the socket and pidfile, and exits 0.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { NbdClient } from "../../src/client/index.js";
import { makeTmpDir, removeTmpDir, startServer, waitFor } from "../helpers/server.js";
import { PYTHON, requirePythonLibnbd } from "../helpers/tools.js";

const script = fileURLToPath(new URL("./durability.py", import.meta.url));
const dir = makeTmpDir("nbdstate-durable-");
afterAll(() => removeTmpDir(dir));

/**
 * The bytes each acknowledged write must have left, newest first. A write
 * that was sent (P) but never acknowledged (the server died) may or may not
 * have landed: the bytes it overlaps are not checked.
 */
function expectedBlocks(journal: string): Map<number, { len: number; sha: string }> {
  const last = new Map<number, { len: number; sha: string }>();
  const forget = (off: number, len: number) => {
    for (const [k, v] of last) if (k < off + len && off < k + v.len) last.delete(k);
  };
  let pending: { off: number; len: number } | null = null;
  for (const line of readFileSync(journal, "utf8").split("\n")) {
    if (!line) continue;
    const [kind, o, l, sha] = line.split(" ");
    const off = Number(o);
    const len = Number(l);
    if (kind === "P") {
      if (pending) forget(pending.off, pending.len); // never acknowledged
      pending = { off, len };
    } else {
      pending = null;
      forget(off, len);
      last.set(off, { len, sha: sha! });
    }
  }
  if (pending) forget(pending.off, pending.len);
  return last;
}

describe.skipIf(!requirePythonLibnbd())("durability with the file plugin", () => {
  it("acknowledged FUA and flushed writes survive SIGKILL, over several rounds", async () => {
    const img = join(dir, "disk.img");
    writeFileSync(img, Buffer.alloc(8 * 1024 * 1024));
    const journal = join(dir, "journal");
    writeFileSync(journal, "");
    for (let round = 0; round < 4; round++) {
      const server = await startServer(["file", img]);
      const client = spawn(PYTHON, [script, server.uri, journal, String(round + 1)], { stdio: "ignore" });
      // Let it write for a while, then kill the server without warning.
      await new Promise((r) => setTimeout(r, 1200 + round * 200));
      process.kill(server.pid, "SIGKILL");
      await new Promise((r) => client.on("exit", r));
      await server.stop();
    }
    const blocks = expectedBlocks(journal);
    expect(blocks.size).toBeGreaterThan(20);
    const disk = readFileSync(img);
    for (const [off, { len, sha }] of blocks) {
      expect(createHash("sha256").update(disk.subarray(off, off + len)).digest("hex"), `block at ${off}`).toBe(sha);
    }
  });
});

describe("graceful shutdown", () => {
  it("SIGTERM answers requests in flight, removes socket and pidfile, exits 0", async () => {
    const pidfile = join(dir, "pid");
    const slow = fileURLToPath(new URL("./slow-plugin.js", import.meta.url));
    const server = await startServer(["-P", pidfile, slow]);
    await waitFor(() => existsSync(pidfile));
    const c = await NbdClient.open({ path: server.sock });
    const reads = Array.from({ length: 8 }, (_, i) => c.pread(4096, i * 4096));
    // Received and dispatched (each read takes 400 ms); now ask the server to stop.
    await new Promise((r) => setTimeout(r, 100));
    process.kill(server.pid, "SIGTERM");
    const results = await Promise.all(reads);
    expect(results.every((b) => b.length === 4096 && b.every((x) => x === 0x5a))).toBe(true);
    // It exits by itself once the answers are out.
    expect(await waitFor(() => server.exited, 10_000)).toBe(true);
    expect(server.exitCode).toBe(0);
    await server.stop();
    expect(existsSync(server.sock)).toBe(false);
    expect(existsSync(pidfile)).toBe(false);
  });
});
