import { describe, it, expect } from "vitest";
import createNull from "../../src/plugins/null/index.js";
import createPattern, { fillPattern } from "../../src/plugins/pattern/index.js";
import { configure, openPlugin, LIST } from "./helpers.js";
import { openThroughStack } from "../helpers/stack.js";

/** The pattern byte at absolute offset i, computed the slow obvious way. */
function refByte(i: number): number {
  const word = BigInt(i - (i % 8));
  const shift = BigInt((7 - (i % 8)) * 8);
  return Number((word >> shift) & 0xffn);
}

describe("null plugin", () => {
  it("defaults to a zero-sized disk, like nbdkit", async () => {
    const p = createNull();
    await configure(p);
    const { ctx } = await openPlugin(p);
    expect(await ctx.getSize()).toBe(0);
  });
  it("reads zeros, discards writes, and reports everything as hole|zero", async () => {
    const p = createNull();
    await configure(p, { size: "1M" });
    const { ctx } = await openPlugin(p);
    await ctx.pwrite(Buffer.alloc(100, 0xaa), 0, 0);
    const buf = Buffer.alloc(100, 0xff);
    await ctx.pread(buf, 0, 0);
    expect(buf.every((b) => b === 0)).toBe(true);
    expect(await ctx.extents(4096, 100, 0)).toEqual([{ length: 4096, type: 3 }]);
    await ctx.trim(10, 0, 0);
    await ctx.zero(10, 0, 0);
    await ctx.flush(0);
    await ctx.cache(10, 0, 0);
  });
  it("supports everything", async () => {
    const p = createNull();
    await configure(p, { size: "1K" });
    const { ctx } = await openPlugin(p);
    expect(await ctx.canWrite()).toBe(true);
    expect(await ctx.canTrim()).toBe(true);
    expect(await ctx.canFastZero()).toBe(true);
    expect(await ctx.canFua()).toBe("native");
    expect(await ctx.canCache()).toBe("native");
    expect(await ctx.canMultiConn()).toBe(true);
    expect(await p.listExports!(LIST)).toEqual([{ name: "" }]);
  });
  it("rejects unknown parameters", () => {
    expect(() => createNull().config!("bar", "1")).toThrow("null: unknown parameter 'bar'");
  });
});

describe("pattern plugin", () => {
  it("requires size and is read-only", async () => {
    const p = createPattern();
    expect(() => p.configComplete!()).toThrow("pattern: size parameter is required");
    await configure(p, { size: "1M" });
    const { ctx } = await openPlugin(p);
    expect(await ctx.canWrite()).toBe(false);
    expect(p.pwrite).toBeUndefined();
  });

  it("stores each 8-byte offset as a big-endian word (nbdkit's example)", async () => {
    const p = createPattern();
    await configure(p, { size: "1M" });
    const { ctx } = await openPlugin(p);
    const buf = Buffer.alloc(48);
    await ctx.pread(buf, 0, 0);
    expect(buf.toString("hex")).toBe(
      "0000000000000000" + "0000000000000008" + "0000000000000010" +
      "0000000000000018" + "0000000000000020" + "0000000000000028",
    );
  });

  it("fills every unaligned sub-range correctly", () => {
    for (const off of [0, 1, 3, 7, 8, 9, 15, 1000, 4093]) {
      for (const len of [0, 1, 2, 5, 7, 8, 9, 16, 17, 31, 100]) {
        const buf = Buffer.alloc(len, 0xee);
        fillPattern(buf, off);
        for (let i = 0; i < len; i++) expect(buf[i], `off ${off} len ${len} i ${i}`).toBe(refByte(off + i));
      }
    }
  });

  it("is correct at offsets above 2^32 (carry into the high word)", () => {
    const off = 2 ** 32 - 13;
    const buf = Buffer.alloc(64);
    fillPattern(buf, off);
    for (let i = 0; i < 64; i++) expect(buf[i]).toBe(refByte(off + i));
    const high = 2 ** 52 + 5;
    const b2 = Buffer.alloc(40);
    fillPattern(b2, high);
    for (let i = 0; i < 40; i++) expect(b2[i]).toBe(refByte(high + i));
  });

  it("fills a buffer that is a slice of a larger one without touching its neighbours", () => {
    const big = Buffer.alloc(64, 0x55);
    fillPattern(big.subarray(3, 40), 11);
    expect(big.subarray(0, 3).every((b) => b === 0x55)).toBe(true);
    expect(big.subarray(40).every((b) => b === 0x55)).toBe(true);
    for (let i = 0; i < 37; i++) expect(big[3 + i]).toBe(refByte(11 + i));
  });

  it("reads beyond the end are refused by the stack's boundary check", async () => {
    const { ctx } = await openThroughStack(createPattern(), [["size", "100"]]);
    await expect(ctx.pread(Buffer.alloc(8), 96, 0)).rejects.toThrow(/beyond the end/);
    // The last word (offset 96) is truncated to its first, high-order half.
    const tail = Buffer.alloc(12);
    await ctx.pread(tail, 88, 0);
    expect(tail.toString("hex")).toBe("0000000000000058" + "00000000");
  });
});
