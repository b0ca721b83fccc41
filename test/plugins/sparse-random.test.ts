// The sparse-random plugin: the layout's statistics (percent of data,
// mean run length), block contents fixed by the block, writes that must
// match, trim/zero only over holes, block status showing the holes. Against
// nbdkit: flags, the shape of `nbdinfo --map`, a self-copy with nbdcopy and
// the same libnbd script.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import createSparseRandom from "../../src/plugins/sparse-random/index.js";
import { BLOCK, RunMap } from "../../src/plugins/sparse-random/runs.js";
import { FLAG_REQ_ONE, NbdError } from "../../src/backend/types.js";
import { NBD_EIO } from "../../src/protocol/constants.js";
import { makeTmpDir, removeTmpDir } from "../helpers/server.js";
import { requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";
import { configure, openPlugin } from "./helpers.js";
import { exportFlags, pythonCommand, runOkUnder, SERVERS, type Server } from "./cli-diff.js";

const ok = requireTools([TOOLS.nbdkit, TOOLS.nbdinfo, TOOLS.nbdcopy]) && requirePythonLibnbd();
const MiB = 1 << 20;

async function disk(params: Record<string, string>) {
  const p = createSparseRandom();
  await configure(p, params);
  await p.getReady!();
  return { p, ...(await openPlugin(p)) };
}

/** Fraction of data and mean data run (bytes) of a layout. */
function shape(pieces: Array<{ length: number; data: boolean }>) {
  let data = 0;
  let total = 0;
  let runs = 0;
  for (const p of pieces) {
    total += p.length;
    if (p.data) {
      data += p.length;
      runs++;
    }
  }
  return { fraction: data / total, meanRun: runs ? data / runs : 0, runs };
}

describe("sparse-random plugin: configuration", () => {
  it("requires size; parses percent, runlength (a size), seed and random-content", () => {
    expect(() => createSparseRandom().configComplete!()).toThrow("sparse-random: size parameter is required");
    const p = createSparseRandom();
    for (const v of ["10", "2.5", "10%", "0", "100", " 50 "]) expect(() => p.config!("percent", v)).not.toThrow();
    for (const v of ["abc", "101", "-1", "", "1x"]) expect(() => p.config!("percent", v), v).toThrow(/percent/);
    expect(() => p.config!("runlength", "16M")).not.toThrow();
    expect(() => p.config!("runlength", "0")).toThrow(/must be > 0/);
    expect(() => p.config!("random-content", "maybe")).toThrow(/random-content/);
    expect(() => p.config!("seed", "0xffffffff")).not.toThrow();
    expect(p.seed).toBe(0xffffffff);
    expect(() => p.config!("bogus", "1")).toThrow("sparse-random: unknown parameter 'bogus'");
  });
});

describe("sparse-random plugin: layout", () => {
  it("hits the requested percentage and mean run length", () => {
    for (const [percent, runlength] of [[10, MiB], [50, 256 * 1024], [90, 4 * MiB], [1, 64 * 1024]] as const) {
      const fractions: number[] = [];
      const means: number[] = [];
      for (const seed of [1, 2, 3, 4]) {
        const m = RunMap.generate(4 * 2 ** 30, seed, percent, runlength);
        const s = shape(m.pieces(0, 4 * 2 ** 30));
        fractions.push(s.fraction);
        means.push(s.meanRun);
      }
      const avg = (a: number[]) => a.reduce((x, y) => x + y, 0) / a.length;
      expect(Math.abs(avg(fractions) * 100 - percent), `percent ${percent} runlength ${runlength}: ${fractions}`).toBeLessThan(
        Math.max(1, percent * 0.15),
      );
      expect(avg(means) / runlength, `mean run ${means}`).toBeGreaterThan(0.85);
      expect(avg(means) / runlength, `mean run ${means}`).toBeLessThan(1.15);
    }
  });

  it("is all holes at percent=0 and all data at percent=100", () => {
    expect(RunMap.generate(10 * MiB + 5, 1, 0, MiB).pieces(0, 10 * MiB + 5)).toEqual([{ offset: 0, length: 10 * MiB + 5, data: false }]);
    expect(RunMap.generate(10 * MiB + 5, 1, 100, MiB).pieces(0, 10 * MiB + 5)).toEqual([{ offset: 0, length: 10 * MiB + 5, data: true }]);
  });

  it("depends on the seed only", () => {
    const a = RunMap.generate(1 << 30, 9, 20, MiB).pieces(0, 1 << 30);
    expect(RunMap.generate(1 << 30, 9, 20, MiB).pieces(0, 1 << 30)).toEqual(a);
    expect(RunMap.generate(1 << 30, 10, 20, MiB).pieces(0, 1 << 30)).not.toEqual(a);
  });

  it("builds a 1T layout at once (one entry per run, not a bit per block)", () => {
    const t = Date.now();
    const m = RunMap.generate(2 ** 40, 1, 10, 16 * MiB);
    expect(Date.now() - t).toBeLessThan(2000);
    expect(m.count).toBeGreaterThan(3000);
    expect(m.count).toBeLessThan(12000);
  });

  it("pieces of any range are block-aligned inside and exact at the ends", () => {
    const m = RunMap.generate(64 * MiB, 3, 40, 64 * 1024);
    const all = m.pieces(0, 64 * MiB);
    for (const p of all.slice(0, -1)) expect((p.offset + p.length) % BLOCK).toBe(0);
    const mid = m.pieces(12345, 5 * MiB);
    expect(mid[0]!.offset).toBe(12345);
    expect(mid.reduce((s, p) => s + p.length, 0)).toBe(5 * MiB);
    for (let i = 1; i < mid.length; i++) expect(mid[i]!.data).not.toBe(mid[i - 1]!.data);
  });
});

describe("sparse-random plugin: data", () => {
  it("reads zeros in holes and one nonzero byte per data block, the same at any alignment", async () => {
    const { p, ctx } = await disk({ size: "64M", seed: "5", percent: "50", runlength: "256K" });
    const first = p.map!.pieces(0, 64 * MiB).find((x) => x.data)!;
    const b = Buffer.alloc(3 * BLOCK);
    await ctx.pread(b, first.offset, 0);
    for (let k = 0; k < 3; k++) {
      const blk = b.subarray(k * BLOCK, (k + 1) * BLOCK);
      expect(blk[0]).not.toBe(0);
      expect(blk.every((x) => x === blk[0])).toBe(true);
    }
    // nbdkit 1.32 derives the byte from the request's offset, so an
    // unaligned read sees other bytes than an aligned one; here it is the block's.
    const u = Buffer.alloc(100);
    await ctx.pread(u, first.offset + 1, 0);
    expect(u.equals(b.subarray(1, 101))).toBe(true);
    const hole = Buffer.alloc(BLOCK, 9);
    await ctx.pread(hole, first.offset - BLOCK, 0);
    expect(hole.every((x) => x === 0)).toBe(true);
  });

  it("random-content=true gives random bytes in each block, also fixed by position", async () => {
    const { p, ctx } = await disk({ size: "64M", seed: "5", percent: "50", runlength: "256K", "random-content": "true" });
    const first = p.map!.pieces(0, 64 * MiB).find((x) => x.data)!;
    const b = Buffer.alloc(BLOCK);
    await ctx.pread(b, first.offset, 0);
    expect(new Set(b).size).toBeGreaterThan(200);
    const u = Buffer.alloc(77);
    await ctx.pread(u, first.offset + 3, 0);
    expect(u.equals(b.subarray(3, 80))).toBe(true);
  });

  it("accepts writes of what is there (also zeros over holes) and refuses others with EIO", async () => {
    const { p, ctx } = await disk({ size: "16M", seed: "8", percent: "50", runlength: "64K" });
    const first = p.map!.pieces(0, 16 * MiB).find((x) => x.data)!;
    const span = Buffer.alloc(3 * BLOCK);
    await ctx.pread(span, first.offset - BLOCK - 7, 0);
    await ctx.pwrite(span, first.offset - BLOCK - 7, 0);
    span[BLOCK + 10] ^= 1;
    expect(((await ctx.pwrite(span, first.offset - BLOCK - 7, 0).catch((e: unknown) => e)) as NbdError).errno).toBe(NBD_EIO);
    expect(((await ctx.pwrite(Buffer.alloc(1, 1), first.offset - 1, 0).catch((e: unknown) => e)) as NbdError).errno).toBe(NBD_EIO);
  });

  it("trims and zeroes holes, refuses to trim or zero data", async () => {
    const { p, ctx } = await disk({ size: "16M", seed: "8", percent: "50", runlength: "64K" });
    const first = p.map!.pieces(0, 16 * MiB).find((x) => x.data)!;
    await ctx.zero(first.offset, 0, 0);
    await ctx.trim(first.offset - 10, 10, 0);
    expect(((await ctx.zero(2, first.offset - 1, 0).catch((e: unknown) => e)) as NbdError).errno).toBe(NBD_EIO);
    expect(((await ctx.trim(BLOCK, first.offset, 0).catch((e: unknown) => e)) as NbdError).errno).toBe(NBD_EIO);
  });

  it("reports the layout as extents and as sparse-read pieces", async () => {
    const { p, h, ctx } = await disk({ size: "16M", seed: "8", percent: "50", runlength: "64K" });
    const pieces = p.map!.pieces(100, 8 * MiB);
    expect(await ctx.extents(8 * MiB, 100, 0)).toEqual(pieces.map((x) => ({ length: x.length, type: x.data ? 0 : 3 })));
    expect(await ctx.extents(8 * MiB, 100, FLAG_REQ_ONE)).toEqual([{ length: pieces[0]!.length, type: pieces[0]!.data ? 0 : 3 }]);
    const buf = Buffer.alloc(8 * MiB, 0xee);
    expect(await p.preadSparse!(h, buf, 100, 0)).toEqual(pieces.map((x) => ({ length: x.length, hole: !x.data })));
    expect(buf[0]).toBe(0xee); // the first block is always a hole: left alone
  });
});

describe.skipIf(!ok)("sparse-random plugin: nbdkit and nbdstate", () => {
  let dir: string;
  beforeAll(() => void (dir = makeTmpDir("nbdstate-sparse-random-")));
  afterAll(() => removeTmpDir(dir));

  it("advertise the same size and flags", async () => {
    const [k, s] = await Promise.all(SERVERS.map((srv) => exportFlags(srv, ["sparse-random", "1M"])));
    expect(s).toEqual(k);
  });

  it("lay out disks of the same shape (nbdinfo --map)", async () => {
    const map = async (srv: Server, seed: number) => {
      const r = await runOkUnder(srv, ["sparse-random", "256M", `seed=${seed}`, "percent=30", "runlength=1048576"], 'nbdinfo --map "$uri"');
      return r.stdout
        .trim()
        .split("\n")
        .map((l) => l.trim().split(/\s+/))
        .map(([, len, type]) => ({ length: Number(len), data: type === "0" }));
    };
    for (const srv of SERVERS) {
      const shapes = await Promise.all([1, 2, 3].map((seed) => map(srv, seed)));
      for (const pieces of shapes) expect(pieces.reduce((s, p) => s + p.length, 0)).toBe(256 * MiB);
      const s = shapes.map(shape);
      const fraction = s.reduce((a, x) => a + x.fraction, 0) / s.length;
      const meanRun = s.reduce((a, x) => a + x.meanRun, 0) / s.length;
      expect(fraction, `${srv} fraction`).toBeGreaterThan(0.2);
      expect(fraction, `${srv} fraction`).toBeLessThan(0.4);
      expect(meanRun / MiB, `${srv} mean run`).toBeGreaterThan(0.6);
      expect(meanRun / MiB, `${srv} mean run`).toBeLessThan(1.6);
    }
  });

  it.each(SERVERS)("%s: nbdcopy copies the disk onto itself (the man page's check)", async (srv) => {
    await runOkUnder(srv, ["sparse-random", "size=64M", "runlength=1048576"], 'nbdcopy "$uri" "$uri"');
  });

  it.each(SERVERS)("%s: a client sees holes, matching writes pass, others fail with EIO", async (srv) => {
    const cmd = pythonCommand(
      dir,
      String.raw`
h = connect()
size = h.get_size()
ext = extents(h, size, 0)
eq(sum(l for (_, l, _) in ext), size, "extents cover the disk")
data = [(o, l) for (o, l, f) in ext if f == 0]
holes = [(o, l) for (o, l, f) in ext if f == 3]
assert data and holes, ext
o, l = data[0]
blk = h.pread(4096, o)
assert blk != bytes(4096)
h.pwrite(blk, o)
bad = bytearray(blk); bad[0] ^= 1
expect_err(errno.EIO, h.pwrite, bytes(bad), o)
ho, hl = holes[0]
eq(h.pread(4096, ho), bytes(4096), "a hole reads as zeros")
h.zero(4096, ho)
h.trim(4096, ho)
expect_err(errno.EIO, h.zero, 4096, o)
expect_err(errno.EIO, h.pwrite, b"\1" * 4096, ho)
h.flush()
print("OK")
`,
    );
    expect((await runOkUnder(srv, ["sparse-random", "size=64M", "seed=4", "percent=50", "runlength=262144"], cmd)).stdout).toMatch(/^OK$/m);
  });
});
