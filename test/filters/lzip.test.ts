// The lzip filter with files made by lzip(1): one member, many members
// (lzip -b), concatenated files; random access by member from several
// clients; corrupt files.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openClient } from "../../src/client/index.js";
import { isNbdkit, makeTmpDir, removeTmpDir, runCli, runOk, startServer, type RunningServer } from "../helpers/server.js";
import { fuzzServe, mutants, parallelRandomReads, testDisk } from "./decode-helpers.js";
import { copyOut, insideTools, openError, sha } from "./inside-helpers.js";

const ok = insideTools([["lzip", "lzip"]]);
let dir: string;
const disk = testDisk(2 << 20, 41);
const lzip = async (...args: string[]) => (await runOk("lzip", ["-c", ...args, join(dir, "disk.img")])).stdoutBuf;

beforeAll(async () => {
  if (!ok) return;
  dir = makeTmpDir("nbdstate-lzip-");
  writeFileSync(join(dir, "disk.img"), disk);
  writeFileSync(join(dir, "one.lz"), await lzip("-6"));
  writeFileSync(join(dir, "members.lz"), await lzip("-1", "-b", "256KiB"));
  writeFileSync(join(dir, "cat.lz"), Buffer.concat([readFileSync(join(dir, "one.lz")), readFileSync(join(dir, "members.lz"))]));
  // 24 MiB as 24 members of 1 MiB each (as plzip splits its input; lzip -b
  // limits the compressed size, so zeros would stay one member).
  const member = (await runOk("lzip", ["-c"], { input: Buffer.alloc(1 << 20) })).stdoutBuf;
  writeFileSync(join(dir, "zeros.lz"), Buffer.concat(Array.from({ length: 24 }, () => member)));
});
afterAll(() => dir && removeTmpDir(dir));

describe.skipIf(!ok || isNbdkit)("lzip filter", () => {
  let srv: RunningServer;
  beforeAll(async () => {
    srv = await startServer(["-v", "--filter=lzip", "file", `dir=${dir}`]);
  });
  afterAll(() => srv?.stop());

  it("one member, many members, concatenated files: nbdcopy gets the uncompressed bytes", async () => {
    expect(sha(await copyOut(srv, "one.lz"))).toBe(sha(disk));
    expect(sha(await copyOut(srv, "members.lz"))).toBe(sha(disk));
    expect(sha(await copyOut(srv, "cat.lz"))).toBe(sha(Buffer.concat([disk, disk])));
    expect(srv.stderr).toMatch(/export 'members.lz': 2097152 bytes, \d+ member\(s\)/);
    const lines = (await runOk("lzip", ["-l", join(dir, "members.lz")])).stdout;
    expect(lines).toMatch(/members/); // lzip itself sees several members too
  });

  it("random reads from 4 clients at once", async () => {
    await parallelRandomReads(srv, disk, 4, 20, 13, "members.lz");
  });

  it("random access: the last page of a 24 MiB multi-member file, fast", async () => {
    const c = await openClient({ path: srv.sock, exportName: "zeros.lz" });
    const t = Date.now();
    expect((await c.pread(4096, (24 << 20) - 4096)).equals(Buffer.alloc(4096))).toBe(true);
    expect(Date.now() - t).toBeLessThan(3000);
    await c.disconnect();
    expect(srv.stderr).toMatch(/export 'zeros.lz': 25165824 bytes, 24 member\(s\)/);
  });

  it("a file that is not lzip: a clear error at open; the server goes on", async () => {
    expect(await openError(srv, "disk.img")).toMatch(/lzip: not an lzip file/);
    expect(sha(await copyOut(srv, "members.lz"))).toBe(sha(disk));
  });

  it("lzip-max-block refuses a member larger than it, and bad parameters fail at startup", async () => {
    const small = await startServer(["--filter=lzip", "file", join(dir, "one.lz"), "lzip-max-block=1M"]);
    try {
      expect(await openError(small, "")).toMatch(/larger than lzip-max-block \(1048576\)/);
    } finally {
      await small.stop();
    }
    const r = await runCli(["--filter=lzip", "file", join(dir, "one.lz"), "lzip-max-depth=0", "--run", "true"]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/lzip-max-depth/);
  });
});

describe.skipIf(!ok || isNbdkit)("lzip filter: corrupt files", () => {
  it("40 seeded damaged files: errors (CRC32, sizes), never a crash or a hang", async () => {
    const good = readFileSync(join(dir, "members.lz"));
    const fz = makeTmpDir("nbdstate-lzfuzz-");
    try {
      const o = await fuzzServe(fz, ["--filter=lzip"], good, disk, mutants(good, 40, 404));
      expect(o.openFailed + o.readFailed).toBeGreaterThan(32);
    } finally {
      removeTmpDir(fz);
    }
  });
});
