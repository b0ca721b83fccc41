import { describe, it, expect } from "vitest";
import createOffset from "../../src/filters/offset/index.js";
import createMemory from "../../src/plugins/memory/index.js";
import createPattern, { fillPattern } from "../../src/plugins/pattern/index.js";
import { FLAG_REQ_ONE } from "../../src/backend/types.js";
import { PAGE_SIZE } from "../../src/plugins/memory/sparse.js";
import type { Plugin } from "../../src/backend/types.js";
import { configureFilter, openFilter, openPlugin } from "./helpers.js";

async function setup(params: [string, string][], plugin: Plugin = createMemory(), size = "1M") {
  const f = createOffset();
  await configureFilter(f, plugin, [["size", size], ...params]);
  const o = await openFilter(f, plugin);
  return { f, p: plugin, ...o };
}

describe("offset filter", () => {
  it("passes keys it does not own to the plugin", async () => {
    const { next } = await setup([["offset", "4K"]]);
    expect(await next.getSize()).toBe(1 << 20);
  });

  it("without range serves from offset to the end", async () => {
    const { f, h, next } = await setup([["offset", "4K"]]);
    expect(await f.getSize!(next, h)).toBe((1 << 20) - 4096);
  });

  it("with range serves exactly range bytes", async () => {
    const { f, h, next } = await setup([["offset", "1K"], ["range", "64K"]]);
    expect(await f.getSize!(next, h)).toBe(65536);
  });

  it("defaults offset to 0", async () => {
    const { f, h, next } = await setup([["range", "1000"]]);
    expect(await f.getSize!(next, h)).toBe(1000);
  });

  it("shifts reads by offset (pattern below)", async () => {
    const { f, h, next } = await setup([["offset", "13"]], createPattern());
    const buf = Buffer.alloc(40);
    await f.pread!(next, h, buf, 5, 0);
    const want = Buffer.alloc(40);
    fillPattern(want, 18);
    expect(buf.equals(want)).toBe(true);
  });

  it("shifts writes, trims and zeroes by offset", async () => {
    const mem = createMemory();
    const { f, h, next } = await setup([["offset", "100"], ["range", "1000"]], mem);
    await f.pwrite!(next, h, Buffer.from("abc"), 7, 0);
    const below = await openPlugin(mem);
    const got = Buffer.alloc(3);
    await below.ctx.pread(got, 107, 0);
    expect(got.toString()).toBe("abc");
    await f.zero!(next, h, 1, 8, 0);
    await below.ctx.pread(got, 107, 0);
    expect(got.toString()).toBe("a\0c");
    await f.trim!(next, h, 1, 7, 0);
    await below.ctx.pread(got, 107, 0);
    expect(got.toString()).toBe("\0\0c");
    await f.cache!(next, h, 10, 0, 0);
  });

  it("shifts extents by offset and clips them to the request", async () => {
    const mem = createMemory();
    const { f, h, next } = await setup([["offset", String(PAGE_SIZE / 2)]], mem);
    const below = await openPlugin(mem);
    await below.ctx.pwrite(Buffer.alloc(1, 1), PAGE_SIZE, 0); // page 1 allocated
    // Relative to the filter, page 1 starts at PAGE_SIZE/2.
    expect(await f.extents!(next, h, 2 * PAGE_SIZE, 0, 0)).toEqual([
      { length: PAGE_SIZE / 2, type: 3 },
      { length: PAGE_SIZE, type: 0 },
      { length: PAGE_SIZE / 2, type: 3 },
    ]);
    expect(await f.extents!(next, h, 2 * PAGE_SIZE, 0, FLAG_REQ_ONE)).toEqual([{ length: PAGE_SIZE / 2, type: 3 }]);
    expect(await f.extents!(next, h, 100, PAGE_SIZE / 2 + 10, 0)).toEqual([{ length: 100, type: 0 }]);
  });

  it("clips lower extents that run past the window", async () => {
    const f = createOffset();
    await f.config!(async () => {}, "range", "100");
    const h = await f.open!({} as never);
    const fakeNext = { extents: async () => [{ length: 80, type: 0 }, { length: 1000, type: 3 }] };
    expect(await f.extents!(fakeNext as never, h, 100, 0, 0)).toEqual([
      { length: 80, type: 0 },
      { length: 20, type: 3 },
    ]);
  });

  it("refuses at prepare an offset beyond the size below", async () => {
    await expect(setup([["offset", "2M"]])).rejects.toThrow(/offset \(2097152\) is larger than the real size \(1048576\)/);
  });

  it("refuses at prepare offset + range beyond the size below", async () => {
    await expect(setup([["offset", "512K"], ["range", "600K"]])).rejects.toThrow(
      /offset \+ range .* is larger than the real size/,
    );
  });

  it("accepts a window ending exactly at the end, and an empty one at the end", async () => {
    const a = await setup([["offset", "512K"], ["range", "512K"]]);
    expect(await a.f.getSize!(a.next, a.h)).toBe(512 * 1024);
    const b = await setup([["offset", "1M"]]);
    expect(await b.f.getSize!(b.next, b.h)).toBe(0);
  });

  it("rejects bad numbers with a clear message", async () => {
    const f = createOffset();
    expect(() => f.config!(async () => {}, "offset", "-1")).toThrow(/^offset: offset: size cannot be negative/);
    expect(() => f.config!(async () => {}, "range", "1Z")).toThrow(/^offset: range: /);
  });
});
