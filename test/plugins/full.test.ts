// The full plugin: zeros to read, ENOSPC for every write, holes in block
// status; in process, and the same command lines under nbdkit and nbdstate
// (nbdinfo --json, a libnbd script, nbdcopy).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import createFull from "../../src/plugins/full/index.js";
import { FLAG_FAST_ZERO, NbdError } from "../../src/backend/types.js";
import { NBD_ENOSPC, NBD_ENOTSUP } from "../../src/protocol/constants.js";
import { makeTmpDir, removeTmpDir } from "../helpers/server.js";
import { requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";
import { configure, openPlugin } from "./helpers.js";
import { exportFlags, pythonCommand, runOkUnder, runUnder, SERVERS } from "./cli-diff.js";

const ok = requireTools([TOOLS.nbdkit, TOOLS.nbdinfo, TOOLS.nbdcopy]) && requirePythonLibnbd();

async function errnoOf(p: Promise<unknown>): Promise<number | undefined> {
  const e = await p.then(() => undefined, (x: unknown) => x);
  return e instanceof NbdError ? e.errno : undefined;
}

describe("full plugin", () => {
  it("requires size, takes it as its magic key, and nothing else", async () => {
    const p = createFull();
    expect(p.magicConfigKey).toBe("size");
    expect(() => p.configComplete!()).toThrow("full: size parameter is required");
    expect(() => p.config!("seed", "1")).toThrow("full: unknown parameter 'seed'");
    expect(() => p.config!("size", "1Q")).toThrow(/^full: size: /);
  });

  it("reads zeros (a hole for sparse reads) and reports hole|zero extents", async () => {
    const p = createFull();
    await configure(p, { size: "1M" });
    const { h, ctx } = await openPlugin(p);
    expect(await ctx.getSize()).toBe(1 << 20);
    const b = Buffer.alloc(4096, 0xaa);
    await ctx.pread(b, 8192, 0);
    expect(b.every((x) => x === 0)).toBe(true);
    expect(await p.preadSparse!(h, Buffer.alloc(100), 0, 0)).toEqual([{ length: 100, hole: true }]);
    expect(await ctx.extents(65536, 4096, 0)).toEqual([{ length: 65536, type: 3 }]);
  });

  it("fails writes, trims and zeroes with ENOSPC, a fast zero with ENOTSUP", async () => {
    const p = createFull();
    await configure(p, { size: "1M" });
    const { ctx } = await openPlugin(p);
    expect(await errnoOf(ctx.pwrite(Buffer.alloc(512), 0, 0))).toBe(NBD_ENOSPC);
    expect(await errnoOf(ctx.trim(512, 0, 0))).toBe(NBD_ENOSPC);
    expect(await errnoOf(ctx.zero(512, 0, 0))).toBe(NBD_ENOSPC);
    expect(await errnoOf(ctx.zero(512, 0, FLAG_FAST_ZERO))).toBe(NBD_ENOTSUP);
  });
});

describe.skipIf(!ok)("full plugin: nbdkit and nbdstate", () => {
  let dir: string;
  beforeAll(() => void (dir = makeTmpDir("nbdstate-full-")));
  afterAll(() => removeTmpDir(dir));

  it("advertise the same size and flags", async () => {
    const [k, s] = await Promise.all(SERVERS.map((srv) => exportFlags(srv, ["full", "1M"])));
    expect(s).toEqual(k);
    expect(k!["can_fast_zero"]).toBe(true);
  });

  it.each(SERVERS)("%s: a client sees zeros, holes and ENOSPC", async (srv) => {
    const cmd = pythonCommand(
      dir,
      String.raw`
h = connect()
eq(h.get_size(), 1 << 20, "size")
eq(h.pread(65536, 4096), bytes(65536), "zeros")
eq(extents(h, 1 << 20, 0), [(0, 1 << 20, 3)], "extents")
expect_err(errno.ENOSPC, h.pwrite, b"x" * 512, 0)
expect_err(errno.ENOSPC, h.trim, 512, 0)
expect_err(errno.ENOSPC, h.zero, 512, 0)
expect_err(errno.ENOTSUP, h.zero, 512, 0, nbd.CMD_FLAG_FAST_ZERO)
eq(h.pread(512, 0), bytes(512), "still zeros")
print("OK")
`,
    );
    const r = await runOkUnder(srv, ["full", "size=1M"], cmd);
    expect(r.stdout).toMatch(/^OK$/m);
  });

  it.each(SERVERS)("%s: nbdcopy reads it, and copying onto it fails", async (srv) => {
    const r = await runOkUnder(srv, ["full", "256K"], 'nbdcopy "$uri" - | cmp -n 262144 - /dev/zero && echo SAME');
    expect(r.stdout).toContain("SAME");
    const w = await runUnder(srv, ["full", "256K"], 'nbdcopy --synchronous -- [ nbdkit pattern 256K ] "$uri"');
    expect(w.code).not.toBe(0);
    expect(w.stderr).toMatch(/No space left on device/);
  });
});
