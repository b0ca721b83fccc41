import { describe, it, expect } from "vitest";
import { parseSize, parseBool } from "../../src/backend/size.js";

describe("parseSize", () => {
  it("parses plain byte counts", () => {
    expect(parseSize("0")).toBe(0);
    expect(parseSize("12345")).toBe(12345);
  });
  it("accepts K M G T P E suffixes in either case, as powers of 1024", () => {
    expect(parseSize("1K")).toBe(1024);
    expect(parseSize("1k")).toBe(1024);
    expect(parseSize("2M")).toBe(2 * 2 ** 20);
    expect(parseSize("3g")).toBe(3 * 2 ** 30);
    expect(parseSize("1T")).toBe(2 ** 40);
    expect(parseSize("4p")).toBe(4 * 2 ** 50);
    expect(() => parseSize("1E")).toThrow(/too large/); // 2^60 is beyond 2^53-1
  });
  it("accepts b (bytes) and s (512-byte sectors) like nbdkit_parse_size", () => {
    expect(parseSize("100b")).toBe(100);
    expect(parseSize("2s")).toBe(1024);
  });
  it("rejects garbage, negative sizes, unknown and multi-letter suffixes with a clear message", () => {
    expect(() => parseSize("")).toThrow(/could not parse size/);
    expect(() => parseSize("abc")).toThrow(/could not parse size/);
    expect(() => parseSize("-1")).toThrow(/negative/);
    expect(() => parseSize("1X")).toThrow(/unknown suffix/);
    expect(() => parseSize("1MiB")).toThrow(/unknown suffix/);
    expect(() => parseSize("1.5M")).toThrow(/could not parse|unknown suffix/);
  });
  it("rejects sizes beyond 2^53-1 rather than rounding them", () => {
    expect(parseSize(String(Number.MAX_SAFE_INTEGER))).toBe(Number.MAX_SAFE_INTEGER);
    expect(() => parseSize("9223372036854775807")).toThrow(/too large/);
    expect(() => parseSize("8P")).toThrow(/too large/);
  });
});

describe("parseBool", () => {
  it("accepts nbdkit's spellings and rejects others", () => {
    for (const t of ["1", "true", "YES", "on"]) expect(parseBool(t)).toBe(true);
    for (const f of ["0", "false", "no", "OFF"]) expect(parseBool(f)).toBe(false);
    expect(() => parseBool("maybe")).toThrow(/boolean/);
  });
});
