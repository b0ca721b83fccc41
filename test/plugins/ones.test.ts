// The ones plugin (nbdkit >= 1.36, so no nbdkit to compare with here):
// every byte is 0xff or byte=N, writes vanish; in process and through the
// CLI with nbdinfo, nbdcopy and libnbd.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import createOnes from "../../src/plugins/ones/index.js";
import { makeTmpDir, removeTmpDir } from "../helpers/server.js";
import { requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";
import { configure, openPlugin } from "./helpers.js";
import { exportFlags, pythonCommand, runOkUnder, runUnder } from "./cli-diff.js";

const ok = requireTools([TOOLS.nbdinfo, TOOLS.nbdcopy]) && requirePythonLibnbd();

describe("ones plugin", () => {
  it("defaults to an empty disk of 0xff bytes", async () => {
    const p = createOnes();
    await configure(p);
    const { ctx } = await openPlugin(p);
    expect(await ctx.getSize()).toBe(0);
    expect(p.magicConfigKey).toBe("size");
  });

  it("reads 0xff, or the byte= byte, in any range", async () => {
    for (const [byte, want] of [[undefined, 0xff], ["0x55", 0x55], ["7", 7], ["010", 8], ["0", 0]] as const) {
      const p = createOnes();
      await configure(p, byte === undefined ? { size: "1M" } : { size: "1M", byte });
      const { ctx } = await openPlugin(p);
      const b = Buffer.alloc(1000, 0x11);
      await ctx.pread(b, 12345, 0);
      expect(b.every((x) => x === want), `byte=${byte}`).toBe(true);
    }
  });

  it("discards writes, trims and zeroes", async () => {
    const p = createOnes();
    await configure(p, { size: "64K" });
    const { ctx } = await openPlugin(p);
    await ctx.pwrite(Buffer.alloc(512), 0, 0);
    await ctx.zero(4096, 0, 0);
    await ctx.trim(4096, 0, 0);
    await ctx.flush(0);
    const b = Buffer.alloc(512);
    await ctx.pread(b, 0, 0);
    expect(b.every((x) => x === 0xff)).toBe(true);
  });

  it("reports data extents, also zero ones for byte=0", async () => {
    const p = createOnes();
    await configure(p, { size: "1M" });
    expect(await (await openPlugin(p)).ctx.extents(4096, 0, 0)).toEqual([{ length: 4096, type: 0 }]);
    const z = createOnes();
    await configure(z, { size: "1M", byte: "0" });
    expect(await (await openPlugin(z)).ctx.extents(4096, 0, 0)).toEqual([{ length: 4096, type: 2 }]);
  });

  it("refuses a byte out of range or not a number, and unknown parameters", () => {
    expect(() => createOnes().config!("byte", "256")).toThrow(/out of range/);
    expect(() => createOnes().config!("byte", "-1")).toThrow(/negative/);
    expect(() => createOnes().config!("byte", "x")).toThrow(/could not parse/);
    expect(() => createOnes().config!("byte", "0xff0")).toThrow(/out of range/);
    expect(() => createOnes().config!("seed", "1")).toThrow("ones: unknown parameter 'seed'");
  });
});

describe.skipIf(!ok)("ones plugin: the command line", () => {
  let dir: string;
  beforeAll(() => void (dir = makeTmpDir("nbdstate-ones-")));
  afterAll(() => removeTmpDir(dir));

  it("advertises a writable disk with every capability, like nbdkit's null plugin", async () => {
    expect(await exportFlags("nbdstate", ["ones", "1M"])).toEqual({
      "export-size": 1 << 20,
      is_read_only: false,
      is_rotational: false,
      can_cache: true,
      can_df: true,
      can_fast_zero: true,
      can_flush: true,
      can_fua: true,
      can_multi_conn: true,
      can_trim: true,
      can_zero: true,
      contexts: ["base:allocation"],
    });
  });

  it("serves byte= to nbdcopy, and a client's writes do not stick", async () => {
    const r = await runOkUnder("nbdstate", ["ones", "size=100000", "byte=0xa5"], 'nbdcopy "$uri" -');
    expect(r.stdoutBuf.equals(Buffer.alloc(100000, 0xa5))).toBe(true);
    const cmd = pythonCommand(
      dir,
      String.raw`
h = connect()
h.pwrite(b"\0" * 4096, 0)
h.zero(4096, 4096)
eq(h.pread(8192, 0), b"\xff" * 8192, "ones after write and zero")
eq(extents(h, 65536, 0), [(0, 65536, 0)], "all data")
print("OK")
`,
    );
    expect((await runOkUnder("nbdstate", ["ones", "64K"], cmd)).stdout).toMatch(/^OK$/m);
  });

  it("refuses a bad byte= at startup with one line", async () => {
    const r = await runUnder("nbdstate", ["ones", "1M", "byte=300"], "true");
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toMatch(/^nbdstate: error: ones: byte: '300' is out of range \(maximum 255\)$/);
  });
});
