import { describe, it, expect } from "vitest";
import createMemory from "../../src/plugins/memory/index.js";
import { PAGE_SIZE } from "../../src/plugins/memory/sparse.js";
import { SharedDisk, sharedDiskUnavailable } from "../../src/plugins/memory/shared-disk.js";
import { NbdError, FLAG_REQ_ONE, FLAG_MAY_TRIM } from "../../src/backend/types.js";
import { NBD_ENOSPC } from "../../src/protocol/constants.js";
import { configure, openPlugin, LIST } from "./helpers.js";
import { openThroughStack } from "../helpers/stack.js";
import createCheckwrite from "../../src/filters/checkwrite/index.js";
import createNofilter from "../../src/filters/nofilter/index.js";

const DATA = 0;
const HOLE = 3;

async function mem(size = "1M") {
  const p = createMemory();
  await configure(p, { size });
  const { h, ctx } = await openPlugin(p);
  return { p, h, ctx };
}

describe("memory plugin: configuration", () => {
  it("requires size", async () => {
    const p = createMemory();
    await expect(async () => p.configComplete!()).rejects.toThrow("memory: size parameter is required");
  });
  it("rejects unknown keys and bad sizes with one-line messages", async () => {
    const p = createMemory();
    expect(() => p.config!("foo", "1")).toThrow("memory: unknown parameter 'foo'");
    expect(() => p.config!("size", "12Q")).toThrow(/^memory: size: .*unknown suffix/);
    expect(() => p.config!("allocator", "malloc")).toThrow(/only 'sparse'/);
    expect(() => p.config!("allocator", "sparse")).not.toThrow();
  });
  it("has size as its magic key and describes its parameters", () => {
    const p = createMemory();
    expect(p.magicConfigKey).toBe("size");
    expect(p.configHelp).toMatch(/^size=<SIZE>\s+\(required\)/);
  });
  it("parses size suffixes", async () => {
    const { p, h } = await mem("2G");
    expect(await p.getSize(h)).toBe(2 * 2 ** 30);
  });
  it("lists one default export named \"\"", async () => {
    const { p } = await mem();
    expect(await p.listExports!(LIST)).toEqual([{ name: "" }]);
    expect(await p.defaultExport!(LIST)).toBe("");
  });
  it("advertises its capabilities", async () => {
    const { ctx } = await mem();
    expect(await ctx.canMultiConn()).toBe(true);
    expect(await ctx.canFua()).toBe("native");
    expect(await ctx.canCache()).toBe("native");
    expect(await ctx.canFastZero()).toBe(true);
    expect(await ctx.canTrim()).toBe(true);
    expect(await ctx.canZero()).toBe(true);
    expect(await ctx.canExtents()).toBe(true);
  });
});

describe("memory plugin: data", () => {
  it("reads zeros from a fresh disk without allocating", async () => {
    const { p, ctx } = await mem();
    const buf = Buffer.alloc(10000, 0xff);
    await ctx.pread(buf, 12345, 0);
    expect(buf.every((b) => b === 0)).toBe(true);
    expect(p.disk.allocatedPages).toBe(0);
  });

  it("writes and reads back across page boundaries, allocating only touched pages", async () => {
    const { p, ctx } = await mem();
    const data = Buffer.alloc(PAGE_SIZE + 100);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
    const off = PAGE_SIZE - 50; // straddles pages 0, 1 and 2
    await ctx.pwrite(data, off, 0);
    expect(p.disk.allocatedPages).toBe(3);
    const back = Buffer.alloc(data.length);
    await ctx.pread(back, off, 0);
    expect(back.equals(data)).toBe(true);
    const around = Buffer.alloc(60);
    await ctx.pread(around, off - 10, 0);
    expect(around.subarray(0, 10).every((b) => b === 0)).toBe(true);
    expect(around.subarray(10).equals(data.subarray(0, 50))).toBe(true);
  });

  it("all connections share one disk", async () => {
    const p = createMemory();
    await configure(p, { size: "1M" });
    const a = await openPlugin(p);
    const b = await openPlugin(p, false, "other-name");
    await a.ctx.pwrite(Buffer.from("shared!"), 4096, 0);
    const got = Buffer.alloc(7);
    await b.ctx.pread(got, 4096, 0);
    expect(got.toString()).toBe("shared!");
  });

  it("separate plugin instances have separate disks", async () => {
    const a = await mem();
    const b = await mem();
    await a.ctx.pwrite(Buffer.from("x"), 0, 0);
    const got = Buffer.alloc(1, 9);
    await b.ctx.pread(got, 0, 0);
    expect(got[0]).toBe(0);
  });

  it("writes beyond the end get ENOSPC from the stack's boundary check (the plugin does not check)", async () => {
    const { ctx } = await openThroughStack(createMemory(), [["size", "64K"]]);
    const err = await ctx.pwrite(Buffer.alloc(2), 65535, 0).catch((e) => e);
    expect(err).toBeInstanceOf(NbdError);
    expect((err as NbdError).errno).toBe(NBD_ENOSPC);
  });

  it("zero and trim free whole pages", async () => {
    const { p, ctx } = await mem();
    await ctx.pwrite(Buffer.alloc(4 * PAGE_SIZE, 1), 0, 0);
    expect(p.disk.allocatedPages).toBe(4);
    await ctx.zero(PAGE_SIZE, 0, FLAG_MAY_TRIM);
    expect(p.disk.allocatedPages).toBe(3);
    await ctx.trim(2 * PAGE_SIZE, PAGE_SIZE, 0);
    expect(p.disk.allocatedPages).toBe(1);
    const buf = Buffer.alloc(4 * PAGE_SIZE);
    await ctx.pread(buf, 0, 0);
    expect(buf.subarray(0, 3 * PAGE_SIZE).every((b) => b === 0)).toBe(true);
    expect(buf.subarray(3 * PAGE_SIZE).every((b) => b === 1)).toBe(true);
  });

  it("zero of a partial range zeroes in place and keeps the page while data remains", async () => {
    const { p, ctx } = await mem();
    await ctx.pwrite(Buffer.alloc(100, 5), 1000, 0);
    await ctx.zero(50, 1000, 0);
    expect(p.disk.allocatedPages).toBe(1);
    const buf = Buffer.alloc(100);
    await ctx.pread(buf, 1000, 0);
    expect(buf.subarray(0, 50).every((b) => b === 0)).toBe(true);
    expect(buf.subarray(50).every((b) => b === 5)).toBe(true);
  });

  it("a page that becomes entirely zero by partial zeroing is freed", async () => {
    const { p, ctx } = await mem();
    await ctx.pwrite(Buffer.alloc(100, 5), 1000, 0);
    await ctx.zero(200, 950, 0);
    expect(p.disk.allocatedPages).toBe(0);
  });

  it("unload frees the disk", async () => {
    const { p, ctx } = await mem();
    await ctx.pwrite(Buffer.alloc(10, 1), 0, 0);
    await p.unload!();
    expect(p.disk.allocatedPages).toBe(0);
  });
});

describe("memory plugin: extents", () => {
  it("reports a fresh disk as one hole|zero extent", async () => {
    const { ctx } = await mem();
    expect(await ctx.extents(1 << 20, 0, 0)).toEqual([{ length: 1 << 20, type: HOLE }]);
  });

  it("reports allocated pages as data and merges adjacent runs", async () => {
    const { ctx } = await mem();
    // pages 1 and 2 allocated (adjacent), page 5 allocated
    await ctx.pwrite(Buffer.alloc(10, 1), PAGE_SIZE + 5, 0);
    await ctx.pwrite(Buffer.alloc(10, 1), 2 * PAGE_SIZE + 5, 0);
    await ctx.pwrite(Buffer.alloc(10, 1), 5 * PAGE_SIZE, 0);
    expect(await ctx.extents(8 * PAGE_SIZE, 0, 0)).toEqual([
      { length: PAGE_SIZE, type: HOLE },
      { length: 2 * PAGE_SIZE, type: DATA },
      { length: 2 * PAGE_SIZE, type: HOLE },
      { length: PAGE_SIZE, type: DATA },
      { length: 2 * PAGE_SIZE, type: HOLE },
    ]);
  });

  it("starts and ends extents at unaligned request boundaries", async () => {
    const { ctx } = await mem();
    await ctx.pwrite(Buffer.alloc(1, 1), PAGE_SIZE, 0);
    expect(await ctx.extents(PAGE_SIZE + 100, 100, 0)).toEqual([
      { length: PAGE_SIZE - 100, type: HOLE },
      { length: 200, type: DATA },
    ]);
  });

  it("with FLAG_REQ_ONE returns only the first run", async () => {
    const { ctx } = await mem();
    await ctx.pwrite(Buffer.alloc(1, 1), 3 * PAGE_SIZE, 0);
    expect(await ctx.extents(8 * PAGE_SIZE, 0, FLAG_REQ_ONE)).toEqual([{ length: 3 * PAGE_SIZE, type: HOLE }]);
    expect(await ctx.extents(8 * PAGE_SIZE, 3 * PAGE_SIZE + 7, FLAG_REQ_ONE)).toEqual([
      { length: PAGE_SIZE - 7, type: DATA },
    ]);
  });

  it("reports trimmed pages as holes again", async () => {
    const { ctx } = await mem();
    await ctx.pwrite(Buffer.alloc(2 * PAGE_SIZE, 1), 0, 0);
    await ctx.trim(PAGE_SIZE, 0, 0);
    expect(await ctx.extents(2 * PAGE_SIZE, 0, 0)).toEqual([
      { length: PAGE_SIZE, type: HOLE },
      { length: PAGE_SIZE, type: DATA },
    ]);
  });

  it("handles huge sparse disks (1 P) at high offsets", async () => {
    const { ctx } = await mem("1P");
    const off = 2 ** 50 - PAGE_SIZE;
    await ctx.pwrite(Buffer.from("end"), off + PAGE_SIZE - 3, 0);
    const got = Buffer.alloc(3);
    await ctx.pread(got, off + PAGE_SIZE - 3, 0);
    expect(got.toString()).toBe("end");
    expect(await ctx.extents(2 * PAGE_SIZE, off - PAGE_SIZE, 0)).toEqual([
      { length: PAGE_SIZE, type: HOLE },
      { length: PAGE_SIZE, type: DATA },
    ]);
  });
});

describe("memory plugin: zero-copy access (DirectMemory)", () => {
  it("views are the pages themselves: holes as lengths, pages adjacent in memory as one view", async () => {
    const p = createMemory();
    const { ctx } = await openThroughStack(p, [["size", "1M"]]);
    const m = ctx.memory!;
    expect(m).toBeTruthy();
    // Pages 2..5 allocated by one write, in order: one slab, side by side.
    await ctx.pwrite(Buffer.alloc(4 * PAGE_SIZE, 0xab), 2 * PAGE_SIZE, 0);
    const out: (Buffer | number)[] = [];
    m.view(7 * PAGE_SIZE - 100, 100, out);
    expect(out.map((x) => (typeof x === "number" ? x : `data ${x.length}`))).toEqual([
      2 * PAGE_SIZE - 100, `data ${4 * PAGE_SIZE}`, PAGE_SIZE,
    ]);
    // A view is the storage: a write shows through it (no copy was made).
    await ctx.pwrite(Buffer.alloc(1, 0x11), 3 * PAGE_SIZE, 0);
    expect((out[1] as Buffer)[PAGE_SIZE]).toBe(0x11);
    m.release();
    expect(p.disk.pins).toBe(0);
  });

  it("targets allocate the pages and what is written into them is the disk", async () => {
    const p = createMemory();
    const { ctx } = await openThroughStack(p, [["size", "1M"]]);
    const t: Buffer[] = [];
    ctx.memory!.target!(PAGE_SIZE + 10, PAGE_SIZE - 5, t);
    expect(t.reduce((n, b) => n + b.length, 0)).toBe(PAGE_SIZE + 10);
    let v = 1;
    for (const b of t) for (let i = 0; i < b.length; i++) b[i] = v++ & 0xff;
    ctx.memory!.release();
    const back = Buffer.alloc(PAGE_SIZE + 10);
    await ctx.pread(back, PAGE_SIZE - 5, 0);
    expect(back[0]).toBe(1);
    expect(back[PAGE_SIZE + 9]).toBe((PAGE_SIZE + 10) & 0xff);
    expect(p.disk.allocatedPages).toBe(3);
  });

  it("a page freed while a view is out is not reused for another offset", async () => {
    const p = createMemory();
    const { ctx } = await openThroughStack(p, [["size", "1M"]]);
    await ctx.pwrite(Buffer.alloc(PAGE_SIZE, 0x55), 0, 0);
    const out: (Buffer | number)[] = [];
    ctx.memory!.view(PAGE_SIZE, 0, out); // a READ reply still being written from page 0
    await ctx.trim(PAGE_SIZE, 0, 0);
    await ctx.pwrite(Buffer.alloc(PAGE_SIZE, 0x77), 4 * PAGE_SIZE, 0);
    expect((out[0] as Buffer).every((b) => b === 0x55)).toBe(true);
    ctx.memory!.release();
    // Released: freed pages are reused again.
    await ctx.trim(PAGE_SIZE, 4 * PAGE_SIZE, 0);
    await ctx.pwrite(Buffer.alloc(PAGE_SIZE, 0x99), 8 * PAGE_SIZE, 0);
    expect(p.disk.pages.get(8)!.every((b) => b === 0x99)).toBe(true);
  });

  it("a read-only handle offers views but no targets; a filter that handles data hides it", async () => {
    const ro = await openThroughStack(createMemory(), [["size", "1M"]], [], true);
    expect(ro.ctx.memory?.view).toBeTypeOf("function");
    expect(ro.ctx.memory?.target).toBeUndefined();
    const { ctx } = await openThroughStack(createMemory(), [["size", "1M"]], [createCheckwrite()]);
    expect(ctx.memory ?? null).toBeNull();
    const passing = await openThroughStack(createMemory(), [["size", "1M"]], [createNofilter()]);
    expect(passing.ctx.memory?.target).toBeTypeOf("function");
  });
});

describe.skipIf(sharedDiskUnavailable() !== "")("memory plugin: the disk shared by worker threads (SharedDisk)", () => {
  it("two instances on one mapping see each other's writes; whole pages zeroed are given back and read as zeros", () => {
    const a = SharedDisk.create(64 * 1024 * 1024);
    const b = SharedDisk.attach(a.state);
    const data = Buffer.alloc(3 * PAGE_SIZE, 0x5a);
    a.write(data, PAGE_SIZE);
    const back = Buffer.alloc(3 * PAGE_SIZE);
    b.read(back, PAGE_SIZE);
    expect(back.equals(data)).toBe(true);
    expect(b.allocatedPages).toBe(3);
    expect(b.extents(5 * PAGE_SIZE, 0, false)).toEqual([
      { length: PAGE_SIZE, type: HOLE }, { length: 3 * PAGE_SIZE, type: DATA }, { length: PAGE_SIZE, type: HOLE },
    ]);
    // Whole pages: MADV_DONTNEED, so the memory reads as zeros only because the kernel gave fresh pages.
    b.zero(2 * PAGE_SIZE, PAGE_SIZE);
    a.read(back, PAGE_SIZE);
    expect(back.subarray(0, 2 * PAGE_SIZE).every((x) => x === 0)).toBe(true);
    expect(back.subarray(2 * PAGE_SIZE).every((x) => x === 0x5a)).toBe(true);
    expect(a.allocatedPages).toBe(1);
    // A partial zero keeps the page while data remains in it.
    a.zero(100, 3 * PAGE_SIZE);
    expect(b.allocatedPages).toBe(1);
  });

  it("views and targets are the mapping itself; a target's pages are data once written", () => {
    const d = SharedDisk.create(8 * 1024 * 1024);
    const t: Buffer[] = [];
    d.target(2 * PAGE_SIZE, 4 * PAGE_SIZE + 10, t);
    expect(t.length).toBe(1);
    t[0]!.fill(7);
    d.written(2 * PAGE_SIZE, 4 * PAGE_SIZE + 10);
    const out: (Buffer | number)[] = [];
    d.view(6 * PAGE_SIZE, 2 * PAGE_SIZE, out);
    expect(out.map((x) => (typeof x === "number" ? x : `data ${x.length}`))).toEqual([2 * PAGE_SIZE, `data ${3 * PAGE_SIZE}`, PAGE_SIZE]);
    const v = out[1] as Buffer;
    expect(v[10]).toBe(7);
    expect(v[9]).toBe(0);
    const pieces = d.readSparse(Buffer.alloc(6 * PAGE_SIZE), 2 * PAGE_SIZE);
    expect(pieces).toEqual([{ length: 2 * PAGE_SIZE, hole: true }, { length: 3 * PAGE_SIZE, hole: false }, { length: PAGE_SIZE, hole: true }]);
  });

  it("the plugin moves to the shared disk when threads share it (before any write), and refuses once written", async () => {
    const p = createMemory();
    const { ctx } = await openThroughStack(p, [["size", "4M"]]);
    const state = p.threads!.share();
    expect(state).toMatchObject({ size: 4 * 1024 * 1024 });
    expect(p.disk).toBeInstanceOf(SharedDisk);
    await ctx.pwrite(Buffer.alloc(4096, 1), 0, 0);
    const twin = createMemory();
    await openThroughStack(twin, [["size", "4M"]]);
    twin.threads!.join(state);
    const back = Buffer.alloc(4096);
    twin.disk.read(back, 0);
    expect(back.every((x) => x === 1)).toBe(true);
    const late = createMemory();
    const l = await openThroughStack(late, [["size", "4M"]]);
    await l.ctx.pwrite(Buffer.alloc(4096, 1), 0, 0);
    expect(late.threads!.share()).toBeNull();
  });
});
