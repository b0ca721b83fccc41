// What the policy filters send to the layer below, in process: a
// recording plugin under a real Stack shows every call (FUA turned into
// flushes, zeroes into writes, flushes replayed over connections, requests
// serialized or cut into aligned blocks). Also: a mode that changes
// nothing leaves the filter without the callback (so requests go straight
// down), and what nbdkit 1.32.5 gets wrong or lacks (also with nbdinfo
// and nbdsh against the command line).
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { toNbdErrno } from "../../src/backend/errors.js";
import type { Stack } from "../../src/backend/stack.js";
import { FLAG_FAST_ZERO, FLAG_FUA, FLAG_MAY_TRIM, type Context, type Filter, type Plugin } from "../../src/backend/types.js";
import { alignedExtents } from "../../src/filters/blocksize/align.js";
import { builtinFilters } from "../../src/filters/registry.js";
import { RwLock } from "../../src/filters/kit/lock.js";
import createMemory from "../../src/plugins/memory/index.js";
import { NBD_ENOTSUP, NBD_EPERM } from "../../src/protocol/constants.js";
import { pythonOk } from "../helpers/python.js";
import { isNbdkit, runOk, startServer } from "../helpers/server.js";
import { runningStack } from "../helpers/stack.js";
import { requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";
import { createRecordingPlugin, type RecordingOptions, type RecordingPlugin } from "./recording-plugin.js";

async function filter(name: string): Promise<Filter> {
  return (await builtinFilters[name]!())();
}

/** A stack of the named filters (outermost first) over `plugin`, configured with params. */
async function stackOf(names: string[], plugin: Plugin, params: [string, string][] = []): Promise<Stack> {
  return runningStack(plugin, await Promise.all(names.map(filter)), params);
}

async function over(names: string[], params: [string, string][] = [], o: RecordingOptions = {}) {
  const plugin = createRecordingPlugin(o);
  const stack = await stackOf(names, plugin, params);
  const conn = await stack.open(false, "", false);
  plugin.calls.length = 0; // what opening asked is not the point
  return { plugin, stack, ctx: conn.ctx, conn };
}

const errnoOf = (p: Promise<unknown>) => p.then(() => 0, (e: unknown) => toNbdErrno(e));
const DATA = ["pread", "preadSparse", "pwrite", "flush", "trim", "zero", "extents", "cache"] as const;

/** The data callbacks a configured filter has (the ones requests go through). */
async function dataCallbacks(name: string, params: [string, string][] = []): Promise<string[]> {
  const f = await filter(name);
  for (const [k, v] of params) await f.config!(async () => {}, k, v);
  await f.configComplete?.(async () => {});
  return DATA.filter((d) => typeof f[d] === "function");
}

describe("a filter mode that changes nothing has no callback: requests go straight down", () => {
  it.each([
    ["nofilter", [], []],
    ["fua", [["fuamode", "pass"]], []],
    ["fua", [], []],
    ["fua", [["fuamode", "native"]], []],
    ["fua", [["fuamode", "emulate"]], ["pwrite", "trim", "zero"]],
    ["nozero", [], []],
    ["nozero", [["zeromode", "plugin"]], []],
    ["nozero", [["zeromode", "plugin"], ["fastzeromode", "none"]], []],
    ["nozero", [["zeromode", "notrim"]], ["zero"]],
    ["nocache", [], []],
    ["nocache", [["cachemode", "nop"]], ["cache"]],
    ["protect", [], []],
    ["protect", [["protect", "0-511"]], ["pwrite", "trim", "zero"]],
    ["blocksize-policy", [["blocksize-minimum", "512"]], []],
    ["blocksize-policy", [["blocksize-write-disconnect", "1M"]], ["pwrite"]],
    ["multi-conn", [["multi-conn-mode", "plugin"], ["multi-conn-track-dirty", "off"]], []],
    ["multi-conn", [["multi-conn-mode", "disable"], ["multi-conn-track-dirty", "fast"]], ["pwrite", "flush", "trim", "zero"]],
    ["noparallel", [["serialize", "connections"]], []],
    ["readonly", [], []],
    ["rotational", [], []],
    ["tls-fallback", [], []],
  ] as [string, [string, string][], string[]][])("%s %j: %j", async (name, params, want) => {
    expect(await dataCallbacks(name, params)).toEqual(want);
  });
});

describe("fua filter: what reaches the plugin", () => {
  it("emulate: a FUA write is a plain write and a flush; other writes are left alone", async () => {
    const { plugin, ctx } = await over(["fua"], [["fuamode", "emulate"]]);
    await ctx.pwrite(Buffer.alloc(512, 1), 0, FLAG_FUA);
    await ctx.zero(512, 512, FLAG_FUA | FLAG_MAY_TRIM);
    await ctx.trim(512, 0, 0);
    expect(plugin.calls).toEqual(["pwrite #1 0+512", "flush #1", "zero #1 512+512 may_trim", "flush #1", "trim #1 0+512"]);
    expect(await ctx.canFua()).toBe("emulate");
  });
  it("force: every write carries FUA, and a flush does nothing", async () => {
    const { plugin, ctx } = await over(["fua"], [["fuamode", "force"]]);
    await ctx.pwrite(Buffer.alloc(1), 0, 0);
    await ctx.trim(10, 0, 0);
    await ctx.flush(0);
    expect(plugin.calls).toEqual(["pwrite #1 0+1 fua", "trim #1 0+10 fua"]);
  });
  it("discard: FUA is dropped and flushes vanish, even over a plugin without flush", async () => {
    const { plugin, ctx } = await over(["fua"], [["fuamode", "discard"]], { flush: false, fua: "none" });
    expect(await ctx.canFlush()).toBe(true);
    await ctx.pwrite(Buffer.alloc(1), 0, FLAG_FUA);
    await ctx.flush(0);
    expect(plugin.calls).toEqual(["pwrite #1 0+1"]);
  });
  it("emulate needs flush below, native and force need FUA below (a read-only client needs neither)", async () => {
    await expect(over(["fua"], [["fuamode", "emulate"]], { flush: false })).rejects.toThrow(/fuamode 'emulate' requires plugin flush support/);
    await expect(over(["fua"], [["fuamode", "native"]], { fua: "none" })).rejects.toThrow(/fuamode 'native' requires plugin fua support/);
    await expect(over(["fua"], [["fuamode", "force"]], { fua: "none" })).rejects.toThrow(/fuamode 'force' requires plugin fua support/);
    const stack = await stackOf(["fua"], createRecordingPlugin({ fua: "none" }), [["fuamode", "force"]]);
    await expect(stack.open(true, "", false)).resolves.toBeTruthy();
  });
  it("fuamode=none, given explicitly, is the default (nbdkit 1.32.5 refuses to start with it)", async () => {
    const { ctx } = await over(["fua"], [["fuamode", "none"]]);
    expect(await ctx.canFua()).toBe("none");
    expect(await ctx.canFlush()).toBe(true);
  });
});

describe("nozero filter: what reaches the plugin", () => {
  it("emulate: zeroes are written as data, FUA on the last piece (emulated below); fast zero fails at once", async () => {
    const { plugin, ctx } = await over(["nozero"], [["zeromode", "emulate"]], { fua: "emulate", size: 2 << 20 });
    plugin.data.fill(9);
    await ctx.zero(3 << 20 >> 1, 1000, FLAG_FUA | FLAG_MAY_TRIM);
    expect(plugin.calls).toEqual(["pwrite #1 1000+1048576", "pwrite #1 1049576+524288", "flush #1"]);
    expect(plugin.data.subarray(1000, 1000 + (3 << 19)).every((b) => b === 0)).toBe(true);
    expect(await errnoOf(ctx.zero(10, 0, FLAG_FAST_ZERO))).toBe(NBD_ENOTSUP);
    expect(await ctx.canZero()).toBe(true);
    expect(await ctx.canFastZero()).toBe(true);
  });
  it("emulate with fastzeromode=ignore does a fast zero as a normal one (nbdkit 1.32.5 fails it with ENOTSUP)", async () => {
    const { plugin, ctx } = await over(["nozero"], [["zeromode", "emulate"], ["fastzeromode", "ignore"]]);
    await ctx.zero(10, 0, FLAG_FAST_ZERO);
    expect(plugin.calls).toEqual(["pwrite #1 0+10"]);
  });
  it("notrim drops MAY_TRIM; slow fails fast zero; ignore drops the fast flag", async () => {
    const a = await over(["nozero"], [["zeromode", "notrim"]]);
    await a.ctx.zero(10, 0, FLAG_MAY_TRIM | FLAG_FUA);
    expect(a.plugin.calls).toEqual(["zero #1 0+10 fua"]);
    const b = await over(["nozero"], [["zeromode", "plugin"], ["fastzeromode", "slow"]]);
    expect(await errnoOf(b.ctx.zero(10, 0, FLAG_FAST_ZERO))).toBe(NBD_ENOTSUP);
    expect(b.plugin.calls).toEqual([]);
    const c = await over(["nozero"], [["zeromode", "plugin"], ["fastzeromode", "ignore"]]);
    await c.ctx.zero(10, 0, FLAG_FAST_ZERO | FLAG_MAY_TRIM);
    expect(c.plugin.calls).toEqual(["zero #1 0+10 may_trim"]);
  });
  it("notrim and plugin refuse a layer below that cannot zero", async () => {
    for (const z of ["notrim", "plugin"]) {
      const stack = await runningStack(createRecordingPlugin(), [await filter("nozero"), await filter("nozero")], [["zeromode", z]]);
      await expect(stack.open(false, "", false)).rejects.toThrow(new RegExp(`zeromode '${z}' requires plugin zero support`));
    }
  });
});

describe("nocache filter", () => {
  it("emulate reads what is cached; nop does nothing; none is not advertised", async () => {
    const e = await over(["nocache"], [["cachemode", "emulate"]], { size: 2 << 20 });
    await e.ctx.cache(3 << 19, 10, 0);
    expect(e.plugin.calls).toEqual(["pread #1 10+1048576", "pread #1 1048586+524288"]);
    const n = await over(["nocache"], [["cachemode", "nop"]]);
    await n.ctx.cache(100, 0, 0);
    expect(n.plugin.calls).toEqual([]);
    expect(await n.ctx.canCache()).toBe("native");
    expect(await (await over(["nocache"])).ctx.canCache()).toBe("none");
  });
});

describe("multi-conn filter: flushes replayed over connections", () => {
  async function two(params: [string, string][], o: RecordingOptions = {}) {
    const plugin = createRecordingPlugin(o);
    const stack = await stackOf(["multi-conn"], plugin, params);
    const a = await stack.open(false, "a", false);
    const b = await stack.open(false, "b", false);
    plugin.calls.length = 0;
    return { plugin, stack, a, b };
  }

  it("auto over a plugin without multi-conn emulates: advertised, FUA becomes emulated", async () => {
    const { a } = await two([]);
    expect(await a.ctx.canMultiConn()).toBe(true);
    expect(await a.ctx.canFua()).toBe("emulate");
  });
  it("track-dirty=connection: a flush on B flushes A, which wrote, and not B, which is clean", async () => {
    const { plugin, a, b } = await two([]);
    await a.ctx.pwrite(Buffer.alloc(1), 0, 0);
    await b.ctx.flush(0);
    expect(plugin.calls).toEqual(["pwrite #1 0+1", "flush #1"]);
    plugin.calls.length = 0;
    await b.ctx.flush(0); // nothing dirty any more
    expect(plugin.calls).toEqual([]);
    // A read on B after a write on A: B may have cached stale data, so both flush.
    await b.ctx.pread(Buffer.alloc(1), 0, 0);
    await a.ctx.pwrite(Buffer.alloc(1), 0, 0);
    await a.ctx.flush(0);
    expect(plugin.calls).toEqual(["pread #2 0+1", "pwrite #1 0+1", "flush #1", "flush #2"]);
  });
  it("a FUA write is a plain write and a replayed flush", async () => {
    const { plugin, a, b } = await two([]);
    await b.ctx.pwrite(Buffer.alloc(1), 5, 0);
    await a.ctx.pwrite(Buffer.alloc(1), 0, FLAG_FUA);
    expect(plugin.calls).toEqual(["pwrite #2 5+1", "pwrite #1 0+1", "flush #1", "flush #2"]);
  });
  it("track-dirty=off flushes every connection every time; fast flushes all once anything is dirty", async () => {
    const off = await two([["multi-conn-track-dirty", "off"]]);
    await off.a.ctx.flush(0);
    expect(off.plugin.calls).toEqual(["flush #1", "flush #2"]);
    const fast = await two([["multi-conn-track-dirty", "fast"]]);
    await fast.a.ctx.flush(0);
    expect(fast.plugin.calls).toEqual([]);
    await fast.b.ctx.pwrite(Buffer.alloc(1), 0, 0);
    await fast.a.ctx.flush(0);
    expect(fast.plugin.calls).toEqual(["pwrite #2 0+1", "flush #1", "flush #2"]);
  });
  it("multi-conn-exportname=true replays only to connections on the same export", async () => {
    const { plugin, stack, a } = await two([["multi-conn-exportname", "true"], ["multi-conn-track-dirty", "off"]]);
    const a2 = await stack.open(false, "a", false);
    plugin.calls.length = 0;
    await a.ctx.flush(0);
    expect(plugin.calls).toEqual(["flush #1", "flush #3"]);
    await stack.close(a2);
  });
  it("a closed connection is no longer flushed", async () => {
    const { plugin, stack, a, b } = await two([["multi-conn-track-dirty", "off"]]);
    await stack.close(a);
    await b.ctx.flush(0);
    expect(plugin.calls).toEqual(["flush #2"]);
  });
  it("plugin mode over a multi-conn plugin skips flushes while nothing is dirty", async () => {
    const { plugin, a } = await two([["multi-conn-mode", "plugin"]], { multiConn: true });
    expect(await a.ctx.canFua()).toBe("native");
    await a.ctx.flush(0);
    expect(plugin.calls).toEqual([]);
    await a.ctx.zero(10, 0, 0);
    await a.ctx.flush(0);
    expect(plugin.calls).toEqual(["zero #1 0+10", "flush #1"]);
  });
  it("emulate needs flush below", async () => {
    const stack = await stackOf(["multi-conn"], createRecordingPlugin({ flush: false }), [["multi-conn-mode", "emulate"]]);
    await expect(stack.open(false, "", false)).rejects.toThrow(/emulating multi-conn requires working flush/);
  });
});

describe("noparallel filter", () => {
  const burst = (ctx: Context) => Promise.all([0, 1, 2, 3].map((i) => ctx.pread(Buffer.alloc(1), i, 0)));
  it("serialize=requests: one request at a time per connection, connections in parallel", async () => {
    const plugin = createRecordingPlugin({ delay: 20 });
    const stack = await stackOf(["noparallel"], plugin);
    const [a, b] = await Promise.all([stack.open(false, "", false), stack.open(false, "", false)]);
    await burst(a.ctx);
    expect(plugin.maxConcurrent).toBe(1);
    await Promise.all([burst(a.ctx), burst(b.ctx)]);
    expect(plugin.maxConcurrent).toBe(2);
  });
  it("serialize=all-requests: one request at a time over all connections", async () => {
    const plugin = createRecordingPlugin({ delay: 10 });
    const stack = await stackOf(["noparallel"], plugin, [["serialize", "all-requests"]]);
    const [a, b] = await Promise.all([stack.open(false, "", false), stack.open(false, "", false)]);
    await Promise.all([burst(a.ctx), burst(b.ctx)]);
    expect(plugin.maxConcurrent).toBe(1);
  });
  it("serialize=connections: a second open waits for the first connection to close", async () => {
    const plugin = createRecordingPlugin();
    const stack = await stackOf(["noparallel"], plugin, [["serialize", "connections"]]);
    const a = await stack.open(false, "", false);
    let second = false;
    const b = stack.open(false, "", false).then((o) => ((second = true), o));
    await new Promise((r) => setTimeout(r, 50));
    expect(second).toBe(false);
    expect(plugin.opens).toBe(1);
    await stack.close(a);
    await stack.close(await b);
    expect(plugin.opens).toBe(2);
  });
});

describe("blocksize filter: the plugin only sees whole blocks", () => {
  it("unaligned requests of every kind reach the plugin aligned and no larger than the limits", async () => {
    const { plugin, ctx } = await over(["blocksize"], [["minblock", "512"], ["maxdata", "4k"], ["maxlen", "8k"]]);
    await ctx.pwrite(Buffer.alloc(10000, 1), 100, FLAG_FUA);
    await ctx.pread(Buffer.alloc(10000), 3, 0);
    await ctx.zero(20000, 7, FLAG_MAY_TRIM);
    await ctx.trim(20000, 7, 0);
    await ctx.cache(10, 1000, 0);
    await ctx.extents(20000, 3, 0);
    for (const c of plugin.calls) {
      const m = /^(\w+) #1 (\d+)\+(\d+)/.exec(c);
      expect(m, c).not.toBeNull();
      const [, kind, off, len] = m!;
      expect(Number(off) % 512, c).toBe(0);
      expect(Number(len) % 512, c).toBe(0);
      expect(Number(len), c).toBeLessThanOrEqual(kind === "pread" || kind === "pwrite" || kind === "cache" ? 4096 : 8192);
    }
    expect(plugin.data.subarray(100, 10100).every((b) => b === 0)).toBe(true); // the zero went over the write
  });
  it("FUA below an emulating plugin: the pieces go without it, then one flush", async () => {
    const { plugin, ctx } = await over(["blocksize"], [["minblock", "512"]], { fua: "emulate" });
    await ctx.pwrite(Buffer.alloc(600), 100, FLAG_FUA);
    expect(plugin.calls).toEqual(["pread #1 0+512", "pwrite #1 0+512", "pread #1 512+512", "pwrite #1 512+512", "flush #1"]);
  });
  it("a fast zero that would be split fails with ENOTSUP before anything is written", async () => {
    const { plugin, ctx } = await over(["blocksize"], [["minblock", "512"], ["maxlen", "4k"]]);
    expect(await errnoOf(ctx.zero(512, 1, FLAG_FAST_ZERO))).toBe(NBD_ENOTSUP);
    expect(await errnoOf(ctx.zero(8192, 0, FLAG_FAST_ZERO))).toBe(NBD_ENOTSUP);
    await ctx.zero(4096, 512, FLAG_FAST_ZERO);
    expect(plugin.calls).toEqual(["zero #1 512+4096 fast"]);
  });
  it("extents are asked aligned and cut to whole blocks, as nbdkit_extents_aligned", async () => {
    // The layer below describes 100-byte pieces alternating data / hole.
    const pieces = (count: number, offset: number) => {
      const out = [];
      for (let at = offset; at < offset + count; at = Math.floor(at / 100) * 100 + 100) {
        out.push({ length: Math.min(Math.floor(at / 100) * 100 + 100, offset + count) - at, type: Math.floor(at / 100) % 2 ? 3 : 0 });
      }
      return out;
    };
    const { ctx } = await over([], [], { extents: pieces });
    // A first piece shorter than a block is merged up to one block: types ANDed.
    expect(await alignedExtents(ctx, 2048, 0, 0, 512)).toEqual([{ length: 512, type: 0 }]);
    // Aligned pieces are kept; the first unaligned one is cut down to whole blocks.
    const big = await over([], [], { extents: () => [{ length: 1024, type: 3 }, { length: 700, type: 0 }, { length: 324, type: 3 }] });
    expect(await alignedExtents(big.ctx, 2048, 0, 0, 512)).toEqual([{ length: 1024, type: 3 }, { length: 512, type: 0 }]);
    // Through the filter, from an unaligned offset.
    const f = await over(["blocksize"], [["minblock", "512"]], { extents: pieces });
    expect(await f.ctx.extents(1000, 700, 0)).toEqual([{ length: 324, type: 0 }]);
  });
});

describe("RwLock", () => {
  it("a waiting writer holds back later readers; readers share", async () => {
    const lock = new RwLock();
    const order: string[] = [];
    const hold = (name: string, ms: number) => async () => {
      order.push(`${name}+`);
      await new Promise((r) => setTimeout(r, ms));
      order.push(`${name}-`);
    };
    await Promise.all([lock.shared(hold("r1", 20)), lock.shared(hold("r2", 20)), lock.exclusive(hold("w", 5)), lock.shared(hold("r3", 1))]);
    expect(order).toEqual(["r1+", "r2+", "r1-", "r2-", "w+", "w-", "r3+", "r3-"]);
    expect(lock.busy).toBe(false);
    await expect(lock.exclusive(() => Promise.reject(new Error("boom")))).rejects.toThrow("boom");
    await expect(lock.shared(() => { throw new Error("sync"); })).rejects.toThrow("sync");
    expect(lock.busy).toBe(false);
  });
});

describe("truncate filter", () => {
  it("a fast zero over the plugin's end fails if the plugin cannot zero fast; past the end it succeeds", async () => {
    const { plugin, ctx } = await over(["truncate"], [["truncate", "2M"]], { fastZero: false });
    expect(await ctx.canFastZero()).toBe(true);
    expect(await errnoOf(ctx.zero(8192, (1 << 20) - 4096, FLAG_FAST_ZERO))).toBe(NBD_ENOTSUP);
    await ctx.zero(4096, (1 << 20) + 4096, FLAG_FAST_ZERO);
    expect(plugin.calls).toEqual([]);
  });
});

describe("tls-fallback filter", () => {
  it("a plaintext client never opens the plugin; a TLS client does", async () => {
    const plugin = createRecordingPlugin();
    const stack = await stackOf(["tls-fallback"], plugin);
    const plain = await stack.open(false, "anything", false);
    expect(plugin.opens).toBe(0);
    expect(await plain.ctx.getSize()).toBe(512);
    expect(await plain.ctx.canWrite()).toBe(false);
    const tls = await stack.open(false, "", true);
    expect(plugin.opens).toBe(1);
    expect(await tls.ctx.getSize()).toBe(1 << 20);
    expect(await stack.listExports({ readonly: false, tls: false })).toEqual([{ name: "" }]);
  });
});

describe("readonly and rotational filters (nbdkit >= 1.38 / 1.40)", () => {
  const dir = mkdtempSync(join(tmpdir(), "nbdstate-ro-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("readonly: read-only without readonly-file", async () => {
    const stack = await stackOf(["readonly"], createMemory(), [["size", "1M"]]);
    const c = await stack.open(false, "", false);
    expect(await c.ctx.canWrite()).toBe(false);
    expect(await c.ctx.canZero()).toBe(false);
  });
  it("readonly-file=PATH: writes fail with EPERM while PATH exists, and succeed once it is gone", async () => {
    const flag = join(dir, "ro");
    const stack = await stackOf(["readonly"], createMemory(), [["size", "1M"], ["readonly-file", flag]]);
    const c = await stack.open(false, "", false);
    expect(await c.ctx.canWrite()).toBe(true);
    await c.ctx.pwrite(Buffer.from("a"), 0, 0);
    writeFileSync(flag, "");
    expect(await errnoOf(c.ctx.pwrite(Buffer.from("b"), 0, 0))).toBe(NBD_EPERM);
    expect(await errnoOf(c.ctx.zero(1, 0, 0))).toBe(NBD_EPERM);
    expect(await errnoOf(c.ctx.trim(1, 0, 0))).toBe(NBD_EPERM);
    rmSync(flag);
    await c.ctx.pwrite(Buffer.from("c"), 0, 0);
    const b = Buffer.alloc(1);
    await c.ctx.pread(b, 0, 0);
    expect(b.toString()).toBe("c");
  });
  it("rotational: true by default, rotational=false clears it, anything else is refused", async () => {
    expect(await (await over(["rotational"])).ctx.isRotational()).toBe(true);
    expect(await (await over(["rotational"], [["rotational", "false"]])).ctx.isRotational()).toBe(false);
    await expect(over(["rotational"], [["rotational", "sideways"]])).rejects.toThrow(/rotational: rotational: could not decipher boolean/);
  });
});

describe.skipIf(isNbdkit || !requireTools([TOOLS.nbdinfo]) || !requirePythonLibnbd())("with real clients: what nbdkit 1.32.5 lacks or refuses", () => {
  const info = async (args: string[]) => {
    const srv = await startServer(args);
    try {
      const r = await runOk("nbdinfo", ["--json", srv.uri]);
      return (JSON.parse(r.stdout) as { exports: Record<string, unknown>[] }).exports[0]!;
    } finally {
      await srv.stop();
    }
  };
  it("readonly, rotational, fuamode=none, as nbdinfo sees them", async () => {
    expect((await info(["--filter=readonly", "memory", "1M"])).is_read_only).toBe(true);
    expect((await info(["--filter=rotational", "memory", "1M"])).is_rotational).toBe(true);
    expect((await info(["--filter=rotational", "memory", "1M", "rotational=false"])).is_rotational).toBe(false);
    const none = await info(["--filter=fua", "memory", "1M", "fuamode=none"]);
    expect([none.can_fua, none.can_flush]).toEqual([false, true]);
  });
  it("readonly-file=PATH switches a connected client between writable and read-only (nbdsh)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nbdstate-rof-"));
    const flag = join(dir, "ro");
    const srv = await startServer(["--filter=readonly", "memory", "1M", `readonly-file=${flag}`]);
    try {
      await pythonOk(`
import pathlib
flag = pathlib.Path(EXTRA[0])
h = connect()
h.pwrite(b"one", 0)
flag.touch()
expect_err(errno.EPERM, h.pwrite, b"two", 0)
expect_err(errno.EPERM, h.zero, 10, 0)
flag.unlink()
h.pwrite(b"six", 0)
eq(h.pread(3, 0), b"six", "after the file went away")
print("OK")
`, srv.uri, [flag]);
    } finally {
      await srv.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
