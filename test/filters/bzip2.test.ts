// The bzip2 filter with files made by bzip2(1): block sizes -1 and -9,
// several streams (concatenated files); random access by block from
// several clients; corrupt files.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isNbdkit, makeTmpDir, removeTmpDir, runCli, runOk, startServer, type RunningServer } from "../helpers/server.js";
import { fuzzServe, mutants, parallelRandomReads, testDisk } from "./decode-helpers.js";
import { copyOut, insideTools, openError, sha } from "./inside-helpers.js";

const ok = insideTools([["bzip2", "bzip2"]]);
let dir: string;
const disk = testDisk(2 << 20, 51);
const bzip2 = async (...args: string[]) => (await runOk("bzip2", ["-c", ...args, join(dir, "disk.img")])).stdoutBuf;

beforeAll(async () => {
  if (!ok) return;
  dir = makeTmpDir("nbdstate-bzip2-");
  writeFileSync(join(dir, "disk.img"), disk);
  writeFileSync(join(dir, "l1.bz2"), await bzip2("-1"));
  writeFileSync(join(dir, "l9.bz2"), await bzip2("-9"));
  writeFileSync(join(dir, "cat.bz2"), Buffer.concat([readFileSync(join(dir, "l9.bz2")), readFileSync(join(dir, "l1.bz2"))]));
});
afterAll(() => dir && removeTmpDir(dir));

describe.skipIf(!ok || isNbdkit)("bzip2 filter", () => {
  let srv: RunningServer;
  beforeAll(async () => {
    srv = await startServer(["-v", "--filter=bzip2", "file", `dir=${dir}`]);
  });
  afterAll(() => srv?.stop());

  it("bzip2 -1 and -9, and two streams: nbdcopy gets the uncompressed bytes", async () => {
    expect(sha(await copyOut(srv, "l1.bz2"))).toBe(sha(disk));
    expect(sha(await copyOut(srv, "l9.bz2"))).toBe(sha(disk));
    expect(sha(await copyOut(srv, "cat.bz2"))).toBe(sha(Buffer.concat([disk, disk])));
    // -1 makes 100k blocks: many of them, found by their magic at any bit.
    expect(srv.stderr).toMatch(/export 'l1.bz2': 2097152 bytes, 1 stream\(s\), (2\d|1\d) block\(s\)/);
    expect(srv.stderr).toMatch(/export 'cat.bz2': 4194304 bytes, 2 stream\(s\)/);
  });

  it("random reads from 4 clients at once", async () => {
    await parallelRandomReads(srv, disk, 4, 20, 17, "l1.bz2");
  });

  it("a file that is not bzip2: a clear error at open; the server goes on", async () => {
    expect(await openError(srv, "disk.img")).toMatch(/bzip2: not a bzip2 file/);
    expect(sha(await copyOut(srv, "l9.bz2"))).toBe(sha(disk));
  });

  it("bad parameters fail at startup", async () => {
    const r = await runCli(["--filter=bzip2", "file", join(dir, "l1.bz2"), "bzip2-max-depth=none", "--run", "true"]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/bzip2-max-depth/);
  });
});

describe.skipIf(!ok || isNbdkit)("bzip2 filter: corrupt files", () => {
  it("40 seeded damaged files: errors (block and stream CRCs), never a crash or a hang", async () => {
    const good = readFileSync(join(dir, "l1.bz2"));
    const fz = makeTmpDir("nbdstate-bzfuzz-");
    try {
      const o = await fuzzServe(fz, ["--filter=bzip2"], good, disk, mutants(good, 40, 505));
      // Every block is decoded (and its CRC checked) at open: damage fails there.
      expect(o.openFailed).toBeGreaterThan(32);
    } finally {
      removeTmpDir(fz);
    }
  });
});
