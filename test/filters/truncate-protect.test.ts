// The truncate and protect filters against nbdkit 1.32.5: same command
// line, same flags, sizes, replies, errors and bytes.
import { describe, expect, it } from "vitest";
import { requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";
import { checkSame, expectSame, type Op } from "./policy-diff.js";

const ready = requireTools([TOOLS.nbdkit, TOOLS.nbdinfo]) && requirePythonLibnbd();
const M = 1 << 20;

/** Requests around the plugin's end (1 MiB) of a disk made 2 MiB. */
const AROUND_END: Op[] = [
  ["pread", M - 100, 200],
  ["pwrite", M - 50, 50, 7],
  ["pwritez", M - 10, 100],
  ["pwrite", M - 10, 100, 8],
  ["pwrite", M + 4096, 10, 9],
  ["pwritez", M + 4096, 4096, ["fua"]],
  ["zero", M - 4096, 8192],
  ["zero", M - 4096, 8192, ["fast"]],
  ["zero", M + 100, 1000, ["fast"]],
  ["trim", M - 4096, 8192, ["fua"]],
  ["cache", M - 4096, 8192],
  ["extents", M - 65536, 2 * 65536],
  ["extents", M + 65536, 4096],
  ["extents", M + 65536, 4096, ["reqone"]],
  ["pread", M - 8192, 16384],
  ["disk"],
];

describe.skipIf(!ready)("truncate filter: same as nbdkit", { concurrent: true }, () => {
  it("truncate=2M over a 1M plugin: zeroes past the end, only zeroes may be written there", async () => {
    const r = await expectSame({ filters: ["truncate"], plugin: ["memory", "1M"], params: ["truncate=2M"] }, AROUND_END);
    expect(r.nbdstate.probe!.size).toBe(2 * M);
    expect(r.nbdstate.probe!.ops![3]).toBe("E:ENOSPC");
  });
  it("truncate=1000 over a 1M plugin: a smaller disk", () =>
    checkSame({ filters: ["truncate"], plugin: ["memory", "1M"], params: ["truncate=1000"] }, [
      ["pwrite", 0, 1000, 3], ["pread", 900, 100], ["extents", 0, 1000], ["disk"],
    ]));
  it.each([
    [["round-up=4096"], "1000"],
    [["round-down=512"], "1000"],
    [["truncate=1001", "round-up=512"], "1M"],
    [["truncate=3000", "round-down=1K"], "1M"],
    [["round-up=1M"], "1048577"],
  ])("%s over memory %s", (params, size) =>
    checkSame({ filters: ["truncate"], plugin: ["memory", size], params }, [
      ["pwrite", 0, 500, 4], ["pread", 0, 512], ["extents", 0, 512], ["disk"],
    ]));
  it("round-up=4096 over memory 1000: block status past the plugin is a hole to the new end", async () => {
    const r = await expectSame({ filters: ["truncate"], plugin: ["memory", "1000"], params: ["round-up=4096"] }, [
      ["extents", 2048, 2048], ["extents", 0, 4096], ["pread", 900, 200], ["zero", 500, 3596, ["fast"]],
    ]);
    expect(r.nbdstate.probe!.ops![0]).toEqual([[2048, 3]]);
  });
  it.each([["round-up=3"], ["round-up=0"], ["round-down=5G"], ["truncate=lots"]])("%s stops the server", (p) =>
    checkSame({ filters: ["truncate"], plugin: ["memory", "1M"], params: [p] }));
});

/** A file of known, non-zero bytes: byte i is (i * 7 + 3) % 256 | 1. */
const content = Buffer.alloc(M);
for (let i = 0; i < M; i++) content[i] = ((i * 7 + 3) % 256) | 1;
const FILE = { plugin: ["file", "$DIR/disk.img"], files: { "disk.img": content } };

describe.skipIf(!ready)("protect filter: same as nbdkit", { concurrent: true }, () => {
  it("protect=0-511: writes that change protected bytes fail with EPERM; the rest go through", async () => {
    const r = await expectSame({ filters: ["protect"], ...FILE, params: ["protect=0-511"] }, [
      ["pwrite", 0, 512, 1],
      ["pwrite", 500, 100, 1],
      ["rewrite", 0, 512],
      ["rewrite", 400, 300],
      ["pwrite", 512, 100, 2],
      ["zero", 0, 1024],
      ["trim", 100, 10],
      ["zero", 600, 100],
      ["disk"],
    ]);
    expect(r.nbdstate.probe!.ops!.slice(0, 5)).toEqual(["E:EPERM", "E:EPERM", "ok", "ok", "ok"]);
  });
  it("protect=~4096-8191 with several ranges, octal and hex, over zeroes", () =>
    checkSame({ filters: ["protect"], plugin: ["memory", "1M"], params: ["protect=~4096-8191", "protect=0x3000-0x3fff", "protect=010000-010777"] }, [
      ["pwrite", 4096, 4096, 1],
      ["pwrite", 4000, 10, 1],
      ["pwrite", 8192, 1, 1],
      ["pwritez", 0, 4096],
      ["zero", 100000, 5000],
      ["trim", 200000, 5000],
      ["pwrite", 12288, 1, 1],
      ["disk"],
    ]));
  it("open-ended ranges: protect=1000- and protect=-99", () =>
    checkSame({ filters: ["protect"], ...FILE, params: ["protect=1000-", "protect=-99"] }, [
      ["pwrite", 100, 900, 5], ["pwrite", 99, 2, 5], ["pwrite", 999, 2, 5], ["rewrite", 0, 4096], ["zero", M - 10, 10], ["disk"],
    ]));
  it.each(["5", "10-5", "abc-def", "1-2x", "~"])("protect=%s stops the server", (p) =>
    checkSame({ filters: ["protect"], plugin: ["memory", "1M"], params: [`protect=${p}`] }));
});
