// The zstd filter with files made by Debian's zstd and pzstd: a frame that
// records its size, a frame from a pipe (no size: temporary file), pzstd's
// frames, concatenated files; the seekable format with a seek table
// written here (per the format's spec) over frames zstd compressed one by
// one; several clients at once; corrupt files.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openClient } from "../../src/client/index.js";
import { isNbdkit, makeTmpDir, removeTmpDir, runCli, runOk, startServer, type RunningServer } from "../helpers/server.js";
import { fuzzServe, mutants, parallelRandomReads, testDisk } from "./decode-helpers.js";
import { copyOut, insideTools, openError, sha } from "./inside-helpers.js";

const ok = insideTools([["zstd", "zstd"], ["pzstd", "zstd"]]);
let dir: string;
const disk = testDisk(2 << 20, 31);

const zstd = async (data: Buffer, ...args: string[]) => (await runOk("zstd", ["-q", "-c", ...args], { input: data })).stdoutBuf;

/**
 * A seekable file: each piece compressed as its own frame by zstd, then the
 * seek table. With `checksums`, the table's checksum of a frame is the one
 * zstd wrote at the end of the frame (the low 32 bits of XXH64, as the spec
 * asks), and the frames keep theirs too.
 */
async function seekable(data: Buffer, frame: number, checksums: boolean): Promise<Buffer> {
  const frames: Buffer[] = [];
  const entries: Buffer[] = [];
  for (let at = 0; at < data.length; at += frame) {
    const piece = data.subarray(at, at + frame);
    const c = await zstd(piece, checksums ? "--check" : "--no-check");
    frames.push(c);
    const e = Buffer.alloc(checksums ? 12 : 8);
    e.writeUInt32LE(c.length, 0);
    e.writeUInt32LE(piece.length, 4);
    if (checksums) c.copy(e, 8, c.length - 4);
    entries.push(e);
  }
  const footer = Buffer.alloc(9);
  footer.writeUInt32LE(frames.length, 0);
  footer[4] = checksums ? 0x80 : 0;
  footer.writeUInt32LE(0x8f92eab1, 5);
  const table = Buffer.concat([...entries, footer]);
  const head = Buffer.alloc(8);
  head.writeUInt32LE(0x184d2a5e, 0);
  head.writeUInt32LE(table.length, 4);
  return Buffer.concat([...frames, head, table]);
}

beforeAll(async () => {
  if (!ok) return;
  dir = makeTmpDir("nbdstate-zstd-");
  writeFileSync(join(dir, "disk.img"), disk);
  await runOk("zstd", ["-q", "-19", join(dir, "disk.img"), "-o", join(dir, "file.zst")]);
  writeFileSync(join(dir, "pipe.zst"), await zstd(disk)); // from a pipe: no content size
  await runOk("pzstd", ["-q", "-p", "2", join(dir, "disk.img"), "-o", join(dir, "pzstd.zst")]);
  writeFileSync(join(dir, "cat.zst"), Buffer.concat([readFileSync(join(dir, "file.zst")), readFileSync(join(dir, "file.zst"))]));
  writeFileSync(join(dir, "seek.zst"), await seekable(disk, 128 << 10, false));
  writeFileSync(join(dir, "seek-sum.zst"), await seekable(disk, 300_000, true));
  writeFileSync(join(dir, "zeros.zst"), await seekable(Buffer.alloc(24 << 20), 1 << 20, false));
  // The seek table's checksum of frame 2 is wrong (the frame itself is fine).
  const bad = readFileSync(join(dir, "seek-sum.zst"));
  const entries = bad.readUInt32LE(bad.length - 9);
  const table = bad.length - 9 - entries * 12;
  bad[table + 2 * 12 + 8]! ^= 0xff;
  writeFileSync(join(dir, "bad-sum.zst"), bad);
});
afterAll(() => dir && removeTmpDir(dir));

describe.skipIf(!ok || isNbdkit)("zstd filter", () => {
  let srv: RunningServer;
  beforeAll(async () => {
    srv = await startServer(["-v", "--filter=zstd", "file", `dir=${dir}`]);
  });
  afterAll(() => srv?.stop());

  it("files from zstd and pzstd: nbdcopy gets the uncompressed bytes", async () => {
    for (const f of ["file.zst", "pipe.zst", "pzstd.zst"]) expect(sha(await copyOut(srv, f)), f).toBe(sha(disk));
    expect(sha(await copyOut(srv, "cat.zst"))).toBe(sha(Buffer.concat([disk, disk])));
    // How each was served: frames with their size by frame, the others through a temporary file.
    expect(srv.stderr).toMatch(/export 'file.zst': 2097152 bytes, frames with their sizes, 1 frame/);
    expect(srv.stderr).toMatch(/export 'pipe.zst': 2097152 bytes, decompressed into a temporary file/);
  });

  it("the seekable format (with and without checksums in the table): byte for byte", async () => {
    for (const f of ["seek.zst", "seek-sum.zst"]) expect(sha(await copyOut(srv, f)), f).toBe(sha(disk));
    expect(srv.stderr).toMatch(/export 'seek.zst': 2097152 bytes, seekable format, 16 frame\(s\)/);
    await runOk("zstd", ["-q", "-t", join(dir, "seek.zst")]); // and zstd itself accepts the file
  });

  it("checksums are checked: a wrong one in the seek table is EIO for that frame only", async () => {
    const c = await openClient({ path: srv.sock, exportName: "bad-sum.zst" });
    try {
      expect((await c.pread(4096, 0)).equals(disk.subarray(0, 4096))).toBe(true);
      await expect(c.pread(4096, 2 * 300_000 + 10)).rejects.toMatchObject({ errnoName: "EIO" });
      expect((await c.pread(4096, 3 * 300_000)).equals(disk.subarray(900_000, 904_096))).toBe(true);
    } finally {
      await c.disconnect();
    }
  });

  it("random reads from 4 clients at once: seekable, and a temporary-file image", async () => {
    await parallelRandomReads(srv, disk, 4, 20, 5, "seek.zst");
    await parallelRandomReads(srv, disk, 3, 10, 9, "pipe.zst");
  });

  it("random access: a read at the end of a 24 MiB seekable file decodes one frame", async () => {
    const c = await openClient({ path: srv.sock, exportName: "zeros.zst" });
    const t = Date.now();
    expect((await c.pread(4096, (24 << 20) - 4096)).equals(Buffer.alloc(4096))).toBe(true);
    expect(Date.now() - t).toBeLessThan(2000);
    await c.disconnect();
    expect(srv.stderr).toMatch(/export 'zeros.zst': 25165824 bytes, seekable format, 24 frame/);
  });

  it("a file that is not zstd: a clear error at open; the server goes on", async () => {
    expect(await openError(srv, "disk.img")).toMatch(/zstd: not a zstd file/);
    expect(sha(await copyOut(srv, "seek.zst"))).toBe(sha(disk));
  });

  it("bad parameters are refused at startup", async () => {
    for (const p of ["zstd-max-block=huge", "zstd-max-depth=x"]) {
      const r = await runCli(["--filter=zstd", "file", join(dir, "file.zst"), p, "--run", "true"]);
      expect(r.code, p).not.toBe(0);
      expect(r.stderr, p).toMatch(/zstd/);
    }
  });
});

describe.skipIf(!ok || isNbdkit)("zstd filter: corrupt files", () => {
  it("24 damaged seekable files and 16 damaged plain ones: errors, never a crash or a hang", async () => {
    for (const [f, n, seed] of [["seek-sum.zst", 24, 303], ["file.zst", 16, 304]] as const) {
      const good = readFileSync(join(dir, f));
      const fz = makeTmpDir("nbdstate-zstfuzz-");
      try {
        const o = await fuzzServe(fz, ["--filter=zstd"], good, disk, mutants(good, n, seed));
        // Checksums catch damage in the data: nearly every case fails.
        expect(o.openFailed + o.readFailed, f).toBeGreaterThan(n * 0.8);
      } finally {
        removeTmpDir(fz);
      }
    }
  });
});
