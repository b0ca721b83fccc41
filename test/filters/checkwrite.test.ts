// The checkwrite filter: writes are checks against the layer below (EIO on
// a difference), zero and trim check for zeros, nothing is ever written.
// Copying tools run against it (nbdcopy, qemu-img), differential against
// nbdkit's checkwrite filter, the layer below untouched.
import { randomBytes } from "node:crypto";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { makeTmpDir, run, runOk, startServer } from "../helpers/server.js";
import { requireTools, TOOLS } from "../helpers/tools.js";
import { expectSameInfo, expectSameReplies, py, sha, startPair, stateTools } from "./state-helpers.js";

const ok = stateTools() && requireTools([TOOLS.qemuImg]);
const MiB = 1024 * 1024;

/** A file with data, zeros, and a hole. */
function sparseImage(dir: string): string {
  const file = join(dir, "disk.img");
  const b = Buffer.alloc(4 * MiB);
  randomBytes(MiB).copy(b, 0);
  randomBytes(300_000).copy(b, 2 * MiB + 12345);
  writeFileSync(file, b);
  return file;
}

describe.skipIf(!ok)("checkwrite filter: copying tools", () => {
  it("nbdcopy and qemu-img convert from the export to itself succeed, and the file is not touched", async () => {
    const dir = makeTmpDir();
    const file = sparseImage(dir);
    const before = statSync(file);
    const hash = sha(readFileSync(file));
    const srv = await startServer(["--filter=checkwrite", "file", file]);
    try {
      await runOk("nbdcopy", [srv.uri, srv.uri], { timeoutMs: 60_000 });
      await runOk("nbdcopy", ["--allocated", srv.uri, srv.uri], { timeoutMs: 60_000 });
      await runOk("qemu-img", ["convert", "-n", "-f", "raw", "-O", "raw", srv.uri, srv.uri], { timeoutMs: 60_000 });
      // A copy of something else fails.
      const other = join(dir, "other.img");
      writeFileSync(other, randomBytes(4 * MiB));
      const r = await run("nbdcopy", [other, srv.uri], { timeoutMs: 60_000 });
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/Input\/output error|EIO/);
    } finally {
      await srv.stop();
    }
    expect(statSync(file).mtimeMs).toBe(before.mtimeMs);
    expect(sha(readFileSync(file))).toBe(hash);
  });

  it("a different write is EIO, the same one succeeds; zero checks for zeros; fast zero only where block status says zero", async () => {
    const dir = makeTmpDir();
    const srv = await startServer(["--filter=checkwrite", "file", sparseImage(dir)]);
    try {
      await py(
        `
h = connect()
same = h.pread(4096, 0)
h.pwrite(same, 0)
expect_err(errno.EIO, h.pwrite, bytes(4096), 0)
h.zero(65536, 3 * 1024 * 1024)                   # zeros below: fine
h.trim(65536, 3 * 1024 * 1024)
expect_err(errno.EIO, h.zero, 65536, 0)
expect_err(errno.EIO, h.trim, 1, 2 * 1024 * 1024 + 12345)
h.flush()
h.pwrite(same, 0, nbd.CMD_FLAG_FUA)
print("OK")`,
        srv.uri,
      );
    } finally {
      await srv.stop();
    }
  });
});

describe.skipIf(!ok)("checkwrite filter: the same command line as nbdkit", () => {
  it("over memory and pattern: flags, and random requests give the same replies (errors included) and bytes", async () => {
    for (const args of [["memory", "2M"], ["pattern", "2M"]]) {
      const pair = await startPair(["--filter=checkwrite", ...args]);
      try {
        await expectSameInfo(pair);
        await expectSameReplies(pair, 21, 200, ["--ops=read,write,zero,trim,flush,cache,status,oob"]);
      } finally {
        await pair.stop();
      }
    }
  });
});
