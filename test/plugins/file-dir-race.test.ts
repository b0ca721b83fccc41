// dir= under attack (issue 12 item 5): export "link2" -> sub/inner, while
// another process swaps d/sub between a directory and a symlink to a
// directory outside d. No open may ever read the outside file.
//
// Each part runs for NBDSTATE_RACE_SECONDS (default 5; the case
// was found in about 20 s: NBDSTATE_RACE_SECONDS=20 for a longer hunt).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, constants as C, mkdirSync, mkdtempSync, openSync, readSync, realpathSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openBeneath, canOpenBeneath } from "../../src/sys/beneath.js";
import { isNbdkit, startServer, type RunningServer } from "../helpers/server.js";
import { requirePythonLibnbd, PYTHON } from "../helpers/tools.js";

const SECONDS = Number(process.env.NBDSTATE_RACE_SECONDS ?? "5");
const INSIDE = Buffer.alloc(4096, "inside.");
const OUTSIDE = Buffer.alloc(4096, "OUTSIDE-SECRET!");

let root: string;
let dir: string;

// The attacker: as fast as it can, d/sub is a directory (d/real), then
// nothing, then a symlink out (d/evil), then nothing again.
const SWAPPER = String.raw`
import os, sys, time
d = sys.argv[1]
end = time.time() + float(sys.argv[2])
n = 0
while time.time() < end:
    for _ in range(200):
        os.rename(d + "/real", d + "/sub"); os.rename(d + "/sub", d + "/real")
        os.rename(d + "/evil", d + "/sub"); os.rename(d + "/sub", d + "/evil")
    n += 200
print(n)
`;

// The victim: a fresh NBD connection to export "link2" each time, reading its first bytes.
const OPENER = String.raw`
import json, sys, time
import nbd
sock, seconds = sys.argv[1], float(sys.argv[2])
counts = {"inside": 0, "outside": 0, "refused": 0, "other": 0}
end = time.time() + seconds
while time.time() < end:
    h = nbd.NBD()
    h.set_export_name("link2")
    try:
        h.connect_unix(sock)
        b = h.pread(16, 0)
        if b.startswith(b"inside."): counts["inside"] += 1
        elif b.startswith(b"OUTSIDE"): counts["outside"] += 1
        else: counts["other"] += 1
        h.shutdown()
    except nbd.Error:
        counts["refused"] += 1
    del h
print(json.dumps(counts))
`;

function startSwapper(seconds: number): { child: ChildProcess; done: Promise<number> } {
  const child = spawn(PYTHON, ["-c", SWAPPER, dir, String(seconds)], { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  child.stdout!.on("data", (b: Buffer) => (out += b.toString()));
  const done = new Promise<number>((resolve, reject) => {
    child.on("exit", (code) => (code === 0 ? resolve(Number(out.trim())) : reject(new Error(`swapper exited ${code}`))));
  });
  return { child, done };
}

beforeAll(() => {
  root = realpathSync(mkdtempSync(join(tmpdir(), "nbdstate-race-")));
  dir = join(root, "d");
  mkdirSync(join(dir, "real"), { recursive: true });
  mkdirSync(join(root, "outside"));
  writeFileSync(join(dir, "real", "inner"), INSIDE);
  writeFileSync(join(root, "outside", "inner"), OUTSIDE);
  symlinkSync(join(root, "outside"), join(dir, "evil"));
  symlinkSync("sub/inner", join(dir, "link2"));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe.skipIf(!canOpenBeneath())("dir= race: in process", () => {
  for (const walkOnly of [false, true]) {
    it(`openBeneath (${walkOnly ? "walk" : "openat2"}) never opens the outside file while d/sub is swapped`, async () => {
      const seconds = Math.max(1, SECONDS / 2);
      const sw = startSwapper(seconds + 0.5);
      const dirfd = openSync(dir, C.O_RDONLY | C.O_DIRECTORY);
      const counts = { inside: 0, outside: 0, refused: 0 };
      const b = Buffer.alloc(16);
      try {
        await new Promise((r) => setTimeout(r, 200)); // let the swapper start
        const end = Date.now() + seconds * 1000;
        while (Date.now() < end) {
          // A burst of opens, then a turn of the event loop (timers, child I/O).
          for (let i = 0; i < 500; i++) {
            let fd: number;
            try {
              fd = openBeneath(dirfd, dir, "link2", C.O_RDONLY | C.O_NONBLOCK, { walkOnly });
            } catch {
              counts.refused++;
              continue;
            }
            try {
              readSync(fd, b, 0, 16, 0);
            } finally {
              closeSync(fd);
            }
            if (b.toString().startsWith("inside.")) counts.inside++;
            else counts.outside++;
          }
          await new Promise((r) => setImmediate(r));
        }
      } finally {
        closeSync(dirfd);
      }
      const swaps = await sw.done;
      expect(counts.outside, JSON.stringify(counts)).toBe(0);
      // The race was real: opens succeeded and were refused while it ran.
      expect(counts.inside).toBeGreaterThan(0);
      expect(counts.refused).toBeGreaterThan(0);
      expect(swaps).toBeGreaterThan(0);
    }, (SECONDS + 20) * 1000);
  }
});

const havePy = requirePythonLibnbd();

describe.skipIf(!havePy || isNbdkit)("dir= race: clients of nbdstate", () => {
  let server: RunningServer | undefined;
  afterAll(async () => {
    await server?.stop();
  });

  it("serves only the inside file or refuses, over many connections, while d/sub is swapped", async () => {
    server = await startServer(["-r", "file", `dir=${dir}`]);
    const sw = startSwapper(SECONDS + 1);
    const opener = spawn(PYTHON, ["-c", OPENER, server.sock, String(SECONDS)], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    opener.stdout!.on("data", (b: Buffer) => (out += b.toString()));
    const code = await new Promise((r) => opener.on("exit", r));
    await sw.done;
    expect(code).toBe(0);
    const counts = JSON.parse(out) as Record<string, number>;
    expect(counts.outside, out).toBe(0);
    expect(counts.other, out).toBe(0);
    expect(counts.inside, out).toBeGreaterThan(0);
    expect(counts.refused, out).toBeGreaterThan(0);
  }, (SECONDS + 40) * 1000);
});
