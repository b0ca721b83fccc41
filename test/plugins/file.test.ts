import { describe, it, expect, beforeEach, afterEach } from "vitest";
import {
  mkdtempSync, rmSync, writeFileSync, readFileSync, statSync, symlinkSync, chmodSync,
  truncateSync, openSync, writeSync, closeSync, existsSync,
} from "node:fs";
import { execFileSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import createFile from "../../src/plugins/file/index.js";
import { inMemoryFs } from "../../src/plugins/file/fd.js";
import { FLAG_FUA, FLAG_MAY_TRIM, FLAG_FAST_ZERO, FLAG_REQ_ONE, NbdError } from "../../src/backend/types.js";
import { NBD_ENOTSUP } from "../../src/protocol/constants.js";
import { configure, openPlugin, LIST } from "./helpers.js";

let dir: string;
let toClose: Array<() => unknown> = [];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "nbdstate-file-"));
});
afterEach(async () => {
  for (const c of toClose.splice(0)) await c();
  rmSync(dir, { recursive: true, force: true });
});

const MiB = 1 << 20;

async function fileOpen(path: string, readonly = false) {
  const p = createFile();
  await configure(p, { file: path });
  const o = await openPlugin(p, readonly);
  toClose.push(() => p.close!(o.h));
  return { p, ...o };
}

describe("file plugin: configuration", () => {
  it("has file as its magic key", () => {
    expect(createFile().magicConfigKey).toBe("file");
  });
  it("requires file= or dir=", () => {
    expect(() => createFile().configComplete!()).toThrow("file: either file= or dir= parameter is required");
  });
  it("refuses file= and dir= together", async () => {
    const f = join(dir, "a");
    writeFileSync(f, "");
    const p = createFile();
    p.config!("file", f);
    p.config!("dir", dir);
    expect(() => p.configComplete!()).toThrow("file: file= and dir= cannot be used together");
  });
  it("refuses a file that does not exist, naming it", () => {
    const p = createFile();
    p.config!("file", join(dir, "missing.img"));
    expect(() => p.configComplete!()).toThrow(/cannot access '.*missing\.img': ENOENT/);
  });
  it("refuses a directory as file= and a file as dir=", () => {
    const f = join(dir, "a");
    writeFileSync(f, "");
    const p1 = createFile();
    p1.config!("file", dir);
    expect(() => p1.configComplete!()).toThrow(/is a directory/);
    const p2 = createFile();
    p2.config!("dir", f);
    expect(() => p2.configComplete!()).toThrow(/is not a directory/);
  });
  it("rejects unknown parameters", () => {
    expect(() => createFile().config!("rdelay", "1")).toThrow("file: unknown parameter 'rdelay'");
  });
  it("takes nbdkit's cache= and fadvise= values and refuses others, naming them", () => {
    const p = createFile();
    for (const v of ["default", "none"]) p.config!("cache", v);
    for (const v of ["normal", "random", "sequential"]) p.config!("fadvise", v);
    expect(() => p.config!("cache", "writeback")).toThrow("file: unknown cache mode: writeback");
    expect(() => p.config!("fadvise", "willneed")).toThrow("file: unknown fadvise mode: willneed");
    expect(() => p.config!("cache", "")).toThrow("file: unknown cache mode: ");
  });
  it("resolves file= at config time (relative paths, symlinks)", async () => {
    const f = join(dir, "real.img");
    writeFileSync(f, Buffer.alloc(4096, 7));
    symlinkSync(f, join(dir, "link.img"));
    const cwd = process.cwd();
    process.chdir(dir);
    const p = createFile();
    try {
      p.config!("file", "link.img");
    } finally {
      process.chdir(cwd);
    }
    await configure(p);
    const { h, ctx } = await openPlugin(p);
    toClose.push(() => p.close!(h));
    const b = Buffer.alloc(1);
    await ctx.pread(b, 0, 0);
    expect(b[0]).toBe(7);
  });
  it("in file= mode lists one export \"\" which is the default", async () => {
    const f = join(dir, "a");
    writeFileSync(f, "");
    const p = createFile();
    await configure(p, { file: f });
    expect(await p.listExports!(LIST)).toEqual([{ name: "" }]);
    expect(await p.defaultExport!(LIST)).toBe("");
  });
});

describe("file plugin: data", () => {
  it("reads, writes, flushes and reports the file size", async () => {
    const f = join(dir, "disk.img");
    writeFileSync(f, Buffer.alloc(MiB, 0));
    const { ctx } = await fileOpen(f);
    expect(await ctx.getSize()).toBe(MiB);
    expect(await ctx.canWrite()).toBe(true);
    expect(await ctx.canFua()).toBe("native");
    expect(await ctx.canMultiConn()).toBe(true);
    await ctx.pwrite(Buffer.from("hello"), 1000, 0);
    await ctx.pwrite(Buffer.from("world"), 2000, FLAG_FUA);
    await ctx.flush(0);
    const disk = readFileSync(f);
    expect(disk.subarray(1000, 1005).toString()).toBe("hello");
    expect(disk.subarray(2000, 2005).toString()).toBe("world");
    const back = Buffer.alloc(5);
    await ctx.pread(back, 2000, 0);
    expect(back.toString()).toBe("world");
  });

  it("fills zeros where a read comes up short (file shrank under us)", async () => {
    const f = join(dir, "disk.img");
    writeFileSync(f, Buffer.alloc(8192, 9));
    const { ctx } = await fileOpen(f);
    writeFileSync(f, Buffer.alloc(4096, 9)); // truncate behind the plugin's back
    const buf = Buffer.alloc(8192, 0xff);
    await ctx.pread(buf, 0, 0);
    expect(buf.subarray(0, 4096).every((b) => b === 9)).toBe(true);
    expect(buf.subarray(4096).every((b) => b === 0)).toBe(true);
  });

  it("opens read-only when asked, and the handle cannot write", async () => {
    const f = join(dir, "disk.img");
    writeFileSync(f, Buffer.alloc(4096));
    const { ctx } = await fileOpen(f, true);
    expect(await ctx.canWrite()).toBe(false);
  });

  it("falls back to read-only when the file cannot be opened read-write", async () => {
    const f = join(dir, "ro.img");
    writeFileSync(f, Buffer.alloc(4096, 3));
    let undo: () => void;
    if (process.getuid?.() === 0) {
      // root ignores modes; the immutable attribute refuses O_RDWR even to root
      try {
        execFileSync("chattr", ["+i", f], { stdio: "ignore" });
      } catch {
        return; // cannot make an unwritable file here: nothing to test
      }
      undo = () => execFileSync("chattr", ["-i", f]);
    } else {
      chmodSync(f, 0o444);
      undo = () => chmodSync(f, 0o644);
    }
    try {
      const { ctx } = await fileOpen(f);
      expect(await ctx.canWrite()).toBe(false);
      const b = Buffer.alloc(1);
      await ctx.pread(b, 10, 0);
      expect(b[0]).toBe(3);
    } finally {
      undo();
    }
  });

  it("trim punches a hole: data reads as zeros and blocks are freed", async () => {
    const f = join(dir, "disk.img");
    writeFileSync(f, Buffer.alloc(4 * MiB, 1));
    const { ctx } = await fileOpen(f);
    await ctx.flush(0);
    const before = statSync(f).blocks;
    await ctx.trim(2 * MiB, MiB, FLAG_FUA);
    const after = statSync(f).blocks;
    expect(statSync(f).size).toBe(4 * MiB);
    const disk = readFileSync(f);
    // Trim is advisory: if this file system cannot punch holes, nothing changes.
    if (after < before) {
      expect(before - after).toBeGreaterThanOrEqual((2 * MiB) / 512);
      expect(disk.subarray(MiB, 3 * MiB).every((b) => b === 0)).toBe(true);
    }
    expect(disk.subarray(0, MiB).every((b) => b === 1)).toBe(true);
    expect(disk.subarray(3 * MiB).every((b) => b === 1)).toBe(true);
  });

  it("zero with MAY_TRIM punches a hole and reads back zeros", async () => {
    const f = join(dir, "disk.img");
    writeFileSync(f, Buffer.alloc(2 * MiB, 1));
    const { ctx } = await fileOpen(f);
    const before = statSync(f).blocks;
    await ctx.zero(MiB, 0, FLAG_MAY_TRIM | FLAG_FAST_ZERO);
    const disk = readFileSync(f);
    expect(disk.subarray(0, MiB).every((b) => b === 0)).toBe(true);
    expect(disk.subarray(MiB).every((b) => b === 1)).toBe(true);
    expect(statSync(f).blocks).toBeLessThan(before);
  });

  it("zero without MAY_TRIM writes zeros (unaligned, over several chunks)", async () => {
    const f = join(dir, "disk.img");
    writeFileSync(f, Buffer.alloc(4 * MiB, 1));
    const { ctx } = await fileOpen(f);
    await ctx.zero(2 * MiB + 3, 5, FLAG_FUA);
    const disk = readFileSync(f);
    expect(disk.subarray(0, 5).every((b) => b === 1)).toBe(true);
    expect(disk.subarray(5, 2 * MiB + 8).every((b) => b === 0)).toBe(true);
    expect(disk.subarray(2 * MiB + 8).every((b) => b === 1)).toBe(true);
  });

  it("zero with FAST_ZERO but not MAY_TRIM fails with ENOTSUP instead of writing", async () => {
    const f = join(dir, "disk.img");
    writeFileSync(f, Buffer.alloc(MiB, 1));
    const { ctx } = await fileOpen(f);
    const err = await ctx.zero(4096, 0, FLAG_FAST_ZERO).catch((e) => e);
    expect(err).toBeInstanceOf(NbdError);
    expect((err as NbdError).errno).toBe(NBD_ENOTSUP);
    expect(readFileSync(f)[0]).toBe(1); // nothing written
  });

  it("is not rotational, as nbdkit's file plugin says of every file", async () => {
    const f = join(dir, "disk.img");
    writeFileSync(f, Buffer.alloc(4096));
    const { ctx } = await fileOpen(f);
    expect(await ctx.isRotational()).toBe(false);
  });

  it("cache reads ahead without changing anything", async () => {
    const f = join(dir, "disk.img");
    writeFileSync(f, Buffer.alloc(3 * MiB, 4));
    const { ctx } = await fileOpen(f);
    expect(await ctx.canCache()).toBe("native");
    await ctx.cache(3 * MiB, 0, 0);
    expect(readFileSync(f).every((b) => b === 4)).toBe(true);
  });

  it("several connections share the file", async () => {
    const f = join(dir, "disk.img");
    writeFileSync(f, Buffer.alloc(4096));
    const p = createFile();
    await configure(p, { file: f });
    const a = await openPlugin(p);
    const b = await openPlugin(p);
    await a.ctx.pwrite(Buffer.from("xyz"), 0, FLAG_FUA);
    const got = Buffer.alloc(3);
    await b.ctx.pread(got, 0, 0);
    expect(got.toString()).toBe("xyz");
    await p.close!(a.h);
    await p.close!(b.h);
  });
});

// A sparse file: holes around 4 KiB of data at 1 MiB, 64 KiB at 3 MiB and
// the last 3 bytes (which allocate the last 4 KiB block).
const SPARSE_SIZE = 8 * MiB;
function makeSparse(path: string): void {
  writeFileSync(path, "");
  truncateSync(path, SPARSE_SIZE);
  const fd = openSync(path, "r+");
  try {
    writeSync(fd, Buffer.alloc(4096, 0x11), 0, 4096, MiB);
    writeSync(fd, Buffer.alloc(65536, 0x22), 0, 65536, 3 * MiB);
    writeSync(fd, Buffer.from("end"), 0, 3, SPARSE_SIZE - 3);
  } finally {
    closeSync(fd);
  }
}
/** [offset, length, hole] of the sparse file, as a file system with holes keeps it. */
const SPARSE_LAYOUT: Array<[number, number, boolean]> = [
  [0, MiB, true],
  [MiB, 4096, false],
  [MiB + 4096, 2 * MiB - 4096, true],
  [3 * MiB, 65536, false],
  [3 * MiB + 65536, SPARSE_SIZE - 4096 - 3 * MiB - 65536, true],
  [SPARSE_SIZE - 4096, 4096, false],
];

describe("file plugin: extents and sparse reads (SEEK_DATA/SEEK_HOLE)", () => {
  it("reports holes and data of a sparse file, clipped to the request", async () => {
    const f = join(dir, "sparse.img");
    makeSparse(f);
    // Sanity: the temp file system keeps holes (ext4, xfs, btrfs, tmpfs all do).
    expect(statSync(f).blocks * 512).toBeLessThan(SPARSE_SIZE / 4);
    const { ctx } = await fileOpen(f);
    expect(await ctx.canExtents()).toBe(true);
    const got = await ctx.extents(SPARSE_SIZE, 0, 0);
    expect(got).toEqual(SPARSE_LAYOUT.map(([, length, hole]) => ({ length, type: hole ? 3 : 0 })));
    // From inside the first data block to inside the next hole.
    expect(await ctx.extents(8192, MiB + 2048, 0)).toEqual([
      { length: 2048, type: 0 },
      { length: 6144, type: 3 },
    ]);
    // REQ_ONE: only the first extent.
    expect(await ctx.extents(SPARSE_SIZE, 0, FLAG_REQ_ONE)).toEqual([{ length: MiB, type: 3 }]);
    expect(await ctx.extents(SPARSE_SIZE - MiB, MiB, FLAG_REQ_ONE)).toEqual([{ length: 4096, type: 0 }]);
  });

  it("sees data written (not yet flushed) and holes punched through the plugin", async () => {
    const f = join(dir, "sparse.img");
    makeSparse(f);
    const { ctx } = await fileOpen(f);
    await ctx.pwrite(Buffer.alloc(4096, 7), 5 * MiB, 0);
    await ctx.trim(65536, 3 * MiB, 0);
    const ext = await ctx.extents(2 * MiB + 4096, 3 * MiB, 0);
    expect(ext).toEqual([
      { length: 2 * MiB, type: 3 },
      { length: 4096, type: 0 },
    ]);
  });

  it("preadSparse skips holes, reports them, and reads the data", async () => {
    const f = join(dir, "sparse.img");
    makeSparse(f);
    const { p, h } = await fileOpen(f);
    const buf = Buffer.alloc(2 * MiB, 0xaa);
    const pieces = await p.preadSparse!(h, buf, 0, 0);
    expect(pieces).toEqual([
      { length: MiB, hole: true },
      { length: 4096, hole: false },
      { length: MiB - 4096, hole: true },
    ]);
    expect(buf.subarray(MiB, MiB + 4096).every((b) => b === 0x11)).toBe(true);
    // Hole bytes were never read into (the reply sends no bytes for them).
    expect(buf.subarray(0, MiB).every((b) => b === 0xaa)).toBe(true);
    expect(buf.subarray(MiB + 4096).every((b) => b === 0xaa)).toBe(true);
  });

  it("preadSparse reads holes shorter than 4 KiB as data, merged with their neighbours", async () => {
    const f = join(dir, "sparse.img");
    makeSparse(f);
    const { p, h } = await fileOpen(f);
    // 1000 bytes of hole, 4096 of data, 1000 of hole: one data piece.
    const buf = Buffer.alloc(6096, 0xaa);
    expect(await p.preadSparse!(h, buf, MiB - 1000, 0)).toEqual([{ length: 6096, hole: false }]);
    expect(buf.subarray(0, 1000).every((b) => b === 0)).toBe(true);
    expect(buf.subarray(1000, 5096).every((b) => b === 0x11)).toBe(true);
    expect(buf.subarray(5096).every((b) => b === 0)).toBe(true);
    // The tail: a 4 KiB hole is reported, then the last block's data.
    const tail = Buffer.alloc(8192, 0xaa);
    expect(await p.preadSparse!(h, tail, SPARSE_SIZE - 8192, 0)).toEqual([
      { length: 4096, hole: true },
      { length: 4096, hole: false },
    ]);
    expect(tail.subarray(8189).toString()).toBe("end");
  });

  it("preadSparse and pread agree on every byte, with cache=none too", async () => {
    const f = join(dir, "sparse.img");
    makeSparse(f);
    const want = readFileSync(f);
    for (const params of [{ file: f }, { file: f, cache: "none", fadvise: "sequential" }]) {
      const pl = createFile();
      await configure(pl, params);
      const { h } = await openPlugin(pl);
      for (const [off, len] of [[0, SPARSE_SIZE], [MiB - 5, 70_000], [3 * MiB + 65535, 2]] as const) {
        const a = Buffer.alloc(len);
        const pieces = await pl.preadSparse!(h, a, off, 0);
        let pos = 0;
        for (const pc of pieces) {
          if (pc.hole) a.fill(0, pos, pos + pc.length);
          pos += pc.length;
        }
        expect(pos).toBe(len);
        const b = Buffer.alloc(len);
        await pl.pread(h, b, off, 0);
        expect(a.equals(want.subarray(off, off + len))).toBe(true);
        expect(b.equals(a)).toBe(true);
      }
      await pl.close!(h);
    }
  });
});

// Needs root and losetup; creates and removes a loop device. Opt in with
// NBDSTATE_LOOP_TESTS=1.
describe.skipIf(process.env.NBDSTATE_LOOP_TESTS !== "1")("file plugin: block devices", () => {
  it("serves a block device: size from sysfs, reads and writes reach it", async () => {
    const img = join(dir, "loop.img");
    writeFileSync(img, Buffer.alloc(3 * MiB));
    const dev = execFileSync("losetup", ["--find", "--show", img], { encoding: "utf8" }).trim();
    try {
      const { p, h, ctx } = await fileOpen(dev);
      expect(await ctx.getSize()).toBe(3 * MiB);
      // SEEK_DATA says nothing about a device: no extents, sparse reads are all data.
      expect(await ctx.canExtents()).toBe(false);
      expect(await p.preadSparse!(h, Buffer.alloc(MiB), 0, 0)).toEqual([{ length: MiB, hole: false }]);
      await ctx.pwrite(Buffer.from("on the device"), 4096, FLAG_FUA);
      await ctx.zero(MiB, MiB, FLAG_MAY_TRIM);
      const got = Buffer.alloc(13);
      await ctx.pread(got, 4096, 0);
      expect(got.toString()).toBe("on the device");
      await p.close!(h);
      toClose.pop();
    } finally {
      execFileSync("losetup", ["-d", dev]);
    }
    expect(readFileSync(img).subarray(4096, 4109).toString()).toBe("on the device");
  });
});

describe.skipIf(!existsSync("/dev/shm"))("file plugin: files in memory (tmpfs)", () => {
  it("a file on tmpfs is read and written synchronously, with the same results; one elsewhere is not", async () => {
    expect(await inMemoryFs("/dev/shm")).toBe(true);
    expect(await inMemoryFs("/proc/self")).toBe(false);
    const dir = mkdtempSync("/dev/shm/nbdstate-file-");
    try {
      const img = join(dir, "disk.img");
      writeFileSync(img, Buffer.alloc(1 << 20));
      const p = createFile();
      await configure(p, { file: img });
      const { h, ctx } = await openPlugin(p);
      expect((h as { fh: { sync: boolean } }).fh.sync).toBe(true);
      const data = Buffer.alloc(65536, 0x3c);
      await ctx.pwrite(data, 4096, 0);
      const back = Buffer.alloc(65536);
      await ctx.pread(back, 4096, 0);
      expect(back.equals(data)).toBe(true);
      expect(readFileSync(img).subarray(4096, 4096 + 65536).equals(data)).toBe(true);
      await p.close!(h);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
