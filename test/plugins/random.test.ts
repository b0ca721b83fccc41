// The random plugin: bytes fixed by (seed, offset) whatever the request's
// alignment, uniform-looking, writes accepted only if they match. Against
// nbdkit: the same flags, map, write errors, a self-copy with nbdcopy, and
// the same byte statistics (the bytes themselves are nbdstate's own).
import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import createRandom from "../../src/plugins/random/index.js";
import { NbdError } from "../../src/backend/types.js";
import { NBD_EIO } from "../../src/protocol/constants.js";
import { makeTmpDir, removeTmpDir } from "../helpers/server.js";
import { requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";
import { configure, openPlugin } from "./helpers.js";
import { exportFlags, pythonCommand, runOkUnder, runUnder, SERVERS } from "./cli-diff.js";

const ok = requireTools([TOOLS.nbdkit, TOOLS.nbdinfo, TOOLS.nbdcopy]) && requirePythonLibnbd();

async function disk(params: Record<string, string>) {
  const p = createRandom();
  await configure(p, params);
  return { p, ...(await openPlugin(p)) };
}

async function read(ctx: { pread(b: Buffer, o: number, f: number): Promise<void> }, offset: number, length: number) {
  const b = Buffer.alloc(length);
  await ctx.pread(b, offset, 0);
  return b;
}

/** Chi-square statistic of the byte histogram against uniform. */
function chiSquare(b: Buffer): number {
  const counts = new Array<number>(256).fill(0);
  for (const x of b) counts[x]!++;
  const e = b.length / 256;
  return counts.reduce((s, c) => s + (c - e) ** 2 / e, 0);
}

describe("random plugin", () => {
  it("requires size; seed is 0..2^32-1 in C notation", async () => {
    expect(() => createRandom().configComplete!()).toThrow("random: size parameter is required");
    const p = createRandom();
    p.config!("seed", "0x10");
    expect(p.seed).toBe(16);
    expect(() => createRandom().config!("seed", "4294967296")).toThrow(/out of range/);
    expect(() => createRandom().config!("seed", "-1")).toThrow(/negative/);
    expect(() => createRandom().config!("fast", "true")).toThrow("random: unknown parameter 'fast'");
  });

  it("gives the same bytes for the same seed and other bytes for another seed", async () => {
    const a = await disk({ size: "1M", seed: "42" });
    const b = await disk({ size: "1M", seed: "42" });
    const c = await disk({ size: "1M", seed: "43" });
    const [ra, rb, rc] = await Promise.all([read(a.ctx, 0, 65536), read(b.ctx, 0, 65536), read(c.ctx, 0, 65536)]);
    expect(ra.equals(rb)).toBe(true);
    expect(ra.equals(rc)).toBe(false);
  });

  it("gives every byte the same value whatever the request's offset and length", async () => {
    const { ctx } = await disk({ size: "1P", seed: "7" });
    for (const base of [0, 4096 * 1000 + 3, 2 ** 34 - 13, 2 ** 49 + 5]) {
      const whole = await read(ctx, base, 64);
      for (const [o, n] of [[0, 64], [1, 7], [3, 1], [5, 40], [17, 47], [63, 1]] as const) {
        expect((await read(ctx, base + o, n)).equals(whole.subarray(o, o + n)), `at ${base}+${o} len ${n}`).toBe(true);
      }
    }
  });

  it("looks uniform: byte histogram, and no block repeats another", async () => {
    const { ctx } = await disk({ size: "8M", seed: "1" });
    const b = await read(ctx, 0, 4 << 20);
    // 255 degrees of freedom: mean 255, sd ~22.6; 400 is beyond 6 sd.
    expect(chiSquare(b)).toBeLessThan(400);
    const blocks = new Set<string>();
    for (let i = 0; i < b.length; i += 4096) blocks.add(b.subarray(i, i + 4096).toString("base64"));
    expect(blocks.size).toBe(b.length / 4096);
  });

  it("accepts a write of the bytes already there and refuses others with EIO", async () => {
    const { ctx } = await disk({ size: "1M", seed: "5" });
    const cur = await read(ctx, 1001, 3000);
    await ctx.pwrite(cur, 1001, 0);
    cur[1500] ^= 1;
    const e = await ctx.pwrite(cur, 1001, 0).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(NbdError);
    expect((e as NbdError).errno).toBe(NBD_EIO);
    for (const op of [() => ctx.trim(4096, 0, 0), () => ctx.zero(4096, 0, 0)]) {
      expect(((await op().catch((x: unknown) => x)) as NbdError).errno).toBe(NBD_EIO);
    }
  });

  it("picks a seed when none is given", () => {
    const seeds = new Set(Array.from({ length: 5 }, () => createRandom().seed));
    expect(seeds.size).toBeGreaterThan(1);
  });
});

describe.skipIf(!ok)("random plugin: nbdkit and nbdstate", () => {
  let dir: string;
  beforeAll(() => void (dir = makeTmpDir("nbdstate-random-")));
  afterAll(() => removeTmpDir(dir));

  it("advertise the same size and flags", async () => {
    const [k, s] = await Promise.all(SERVERS.map((srv) => exportFlags(srv, ["random", "1M", "seed=1"])));
    expect(s).toEqual(k);
  });

  it.each(SERVERS)("%s: writes must match (EIO otherwise), trim and zero fail, the map is all data", async (srv) => {
    const cmd = pythonCommand(
      dir,
      String.raw`
h = connect()
cur = h.pread(8192, 12345)
h.pwrite(cur, 12345)
bad = bytearray(cur); bad[100] ^= 0xff
expect_err(errno.EIO, h.pwrite, bytes(bad), 12345)
expect_err(errno.EIO, h.trim, 4096, 0)
expect_err(errno.EIO, h.zero, 4096, 0)
eq(h.pread(8192, 12345), cur, "unchanged")
eq(h.pread(100, 12345 + 50), cur[50:150], "unaligned read")
ext = extents(h, 1 << 20, 0)
assert all(f == 0 for (_, _, f) in ext), ext
print("OK")
`,
    );
    expect((await runOkUnder(srv, ["random", "size=1M", "seed=9"], cmd)).stdout).toMatch(/^OK$/m);
  });

  it.each(SERVERS)("%s: nbdcopy copies the disk onto itself (the man page's check)", async (srv) => {
    await runOkUnder(srv, ["random", "size=4M"], 'nbdcopy "$uri" "$uri"');
  });

  it("both serve uniform-looking bytes; nbdstate's are fixed by the seed across runs", async () => {
    const out = async (srv: "nbdkit" | "nbdstate", seed: string) =>
      (await runOkUnder(srv, ["random", "1M", `seed=${seed}`], 'nbdcopy "$uri" -')).stdoutBuf;
    const [k, s1, s2, s3] = await Promise.all([out("nbdkit", "3"), out("nbdstate", "3"), out("nbdstate", "3"), out("nbdstate", "4")]);
    expect(k.length).toBe(1 << 20);
    expect(s1.length).toBe(1 << 20);
    expect(chiSquare(k)).toBeLessThan(400);
    expect(chiSquare(s1)).toBeLessThan(400);
    const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
    expect(sha(s1)).toBe(sha(s2));
    expect(sha(s1)).not.toBe(sha(s3));
  });

  it.each(SERVERS)("%s: refuses to start without size", async (srv) => {
    const r = await runUnder(srv, ["random", "seed=1"], "true");
    // nbdkit 1.32 documents size as required but serves an empty disk;
    // nbdstate requires it.
    if (srv === "nbdstate") {
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/random: size parameter is required/);
    } else expect(r.code).toBe(0);
  });
});
