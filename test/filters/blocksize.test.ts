// The blocksize and blocksize-policy filters against nbdkit 1.32.5 (same
// command line: same advertised block sizes, sizes, replies, errors and
// bytes), concurrent read-modify-writes that must not lose each other's
// bytes, and blocksize-policy's additions after 1.32 (write-disconnect,
// strict-error, the short last block).
import { createHash, randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { makeTmpDir, removeTmpDir, run } from "../helpers/server.js";
import { requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";
import { checkSame, expectSame, runBoth, type Op } from "./policy-diff.js";

const ready = requireTools([TOOLS.nbdkit, TOOLS.nbdinfo, TOOLS.nbdcopy]) && requirePythonLibnbd();
const MEM = ["memory", "1M"];

/** Unaligned and oversized requests of every kind, then everything read back. */
const UNALIGNED: Op[] = [
  ["pwrite", 100, 1000, 1],
  ["pwrite", 511, 2, 2],
  ["pwrite", 4095, 70000, 3, ["fua"]],
  ["pread", 1, 3000],
  ["pread", 4000, 100000],
  ["zero", 700, 3000],
  ["zero", 20000, 50000, ["fua"]],
  ["zero", 700, 3000, ["fast"]],
  ["zero", 8192, 4096, ["fast"]],
  ["zero", 200000, 300000],
  ["trim", 100, 5000],
  ["trim", 300000, 100000, ["fua"]],
  ["cache", 3, 10],
  ["cache", 0, 300000],
  ["extents", 100, 70000],
  ["extents", 4097, 300000],
  ["extents", 0, 1 << 20, ["reqone"]],
  ["pread", 0, 131072],
  ["disk"],
];

/** What policy-probe.py writes for ["pwrite", off, len, seed]. */
function seeded(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = ((seed + i) % 251) + 1;
  return b;
}

describe.skipIf(!ready)("blocksize filter: same as nbdkit", { concurrent: true }, () => {
  it.each([[["minblock=512"]], [["minblock=4k"]], [["maxdata=4k"]]])("%s over memory: unaligned and large requests", (params) =>
    checkSame({ filters: ["blocksize"], plugin: MEM, params }, UNALIGNED));
  // With blocks or extent requests of another size than the memory
  // plugins' 32 KiB pages, how much one block status reply covers depends
  // on how each plugin cuts its extents (both answers are right; the
  // alignment itself is pinned in policy-behaviour.test.ts): bytes only.
  it.each([[["minblock=4k", "maxdata=8k", "maxlen=16k"]], [["maxlen=8k"]], [["minblock=64K", "maxdata=64K"]]])(
    "%s over memory: unaligned and large requests",
    (params) => checkSame({ filters: ["blocksize"], plugin: MEM, params }, UNALIGNED.filter((o) => o[0] !== "extents")),
  );

  it("minblock=4k over a plugin of 1000001 bytes: the unaligned tail is cut off", async () => {
    const r = await expectSame({ filters: ["blocksize"], plugin: ["memory", "1000001"], params: ["minblock=4k"] }, [["disk"]]);
    expect(r.nbdstate.probe!.size).toBe(1000001 - (1000001 % 4096));
  });

  it("minblock=512 maxdata=4k over file, with FUA", () =>
    checkSame(
      { filters: ["blocksize"], plugin: ["file", "$DIR/d.img"], files: { "d.img": Buffer.alloc(1 << 20) }, params: ["minblock=512", "maxdata=4k"] },
      UNALIGNED.filter((o) => o[0] !== "extents" && !JSON.stringify(o).includes("fast")),
    ));

  it.each([["minblock=3"], ["minblock=128K"], ["minblock=512", "maxdata=1000"], ["minblock=512", "maxlen=700"], ["maxlen=0"], ["maxdata=5G"]])(
    "%s stops the server",
    (...params) => checkSame({ filters: ["blocksize"], plugin: MEM, params }),
  );

  it("concurrent unaligned writes into the same blocks all land (read-modify-write is serialized)", async () => {
    // 40 writes in flight at once, none overlapping another, most sharing
    // a 4 KiB block with others, plus aligned writes into the same blocks.
    const writes: [number, number, number][] = [];
    for (let i = 0; i < 40; i++) writes.push([i * 300 + 50, 250, i + 1]);
    writes.push([12288, 4096, 77], [16384 + 10, 100, 78], [16384 + 200, 3896, 79]);
    const want = Buffer.alloc(1 << 20);
    for (const [off, len, seed] of writes) seeded(len, seed).copy(want, off);
    const hash = createHash("sha256").update(want).digest("hex").slice(0, 16);
    const ops: Op[] = [["aio_pwrites", writes], ["disk"]];
    const r = await expectSame({ filters: ["blocksize"], plugin: MEM, params: ["minblock=4k"] }, ops);
    expect(r.nbdstate.probe!.ops![1]).toBe(hash);
  });
});

describe.skipIf(!ready)("blocksize filter with nbdcopy (4 connections, many requests in flight)", () => {
  it("an odd-sized file behind blocksize minblock=4k and truncate round-up=4k: copied in and out intact", async () => {
    const tmp = makeTmpDir("nbdstate-bscopy-");
    try {
      const src = join(tmp, "src.bin");
      const data = randomBytes(300_001);
      writeFileSync(src, data);
      const out = join(tmp, "out");
      const r = await runBoth(
        { filters: ["blocksize", "truncate"], plugin: ["file", "$DIR/d.img"], files: { "d.img": Buffer.alloc(300_001) }, params: ["minblock=4k", "round-up=4k"] },
        [],
        async (sock, kind) => {
          const uri = `nbd+unix:///?socket=${sock}`;
          const into = await run("nbdcopy", [src, uri], { timeoutMs: 30_000 });
          const back = await run("nbdcopy", [uri, `${out}.${kind}`], { timeoutMs: 30_000 });
          return { into: into.code, back: back.code, stderr: into.stderr + back.stderr };
        },
      );
      for (const kind of ["nbdkit", "nbdstate"] as const) {
        expect(r.extra[kind], kind).toEqual({ into: 0, back: 0, stderr: "" });
        const copied = readFileSync(`${out}.${kind}`);
        expect(copied.length).toBe(303_104); // rounded up to 4 KiB
        expect(copied.subarray(0, data.length).equals(data), kind).toBe(true);
        expect(copied.subarray(data.length).every((b) => b === 0)).toBe(true);
      }
    } finally {
      removeTmpDir(tmp);
    }
  });
});

describe.skipIf(!ready)("blocksize-policy filter: same as nbdkit", { concurrent: true }, () => {
  it.each([
    [["blocksize-preferred=32K"]],
    [["blocksize-minimum=512"]],
    [["blocksize-maximum=64K"]],
    [["blocksize-minimum=512", "blocksize-preferred=4096", "blocksize-maximum=1M"]],
    [["blocksize-minimum=4096", "blocksize-preferred=65536"]],
  ])("%s: advertised sizes", (params) => checkSame({ filters: ["blocksize-policy"], plugin: MEM, params }, [["pread", 1, 10], ["disk"]]));

  const BAD: Op[] = [
    ["strict", 0],
    ["pread", 0, 100],
    ["pread", 100, 512],
    ["pread", 0, 131072],
    ["pread", 0, 4096],
    ["pwrite", 0, 600, 1],
    ["pwrite", 512, 512, 1],
    ["zero", 0, 100],
    ["zero", 0, 262144],
    ["trim", 1, 512],
    ["trim", 512, 1024],
    ["cache", 0, 10],
    ["cache", 512, 512],
    ["extents", 0, 100],
    ["extents", 0, 1024],
    ["disk"],
  ];
  it("blocksize-error-policy=error refuses what breaks the constraints with EINVAL", async () => {
    const r = await expectSame(
      { filters: ["blocksize-policy"], plugin: MEM, params: ["blocksize-error-policy=error", "blocksize-minimum=512", "blocksize-maximum=64K"] },
      BAD,
    );
    expect(r.nbdstate.probe!.ops!.slice(1, 5)).toEqual(["E:EINVAL", "E:EINVAL", "E:EINVAL", expect.any(String)]);
  });
  it("blocksize-error-policy=allow passes the same requests down", () =>
    checkSame({ filters: ["blocksize-policy"], plugin: MEM, params: ["blocksize-minimum=512", "blocksize-maximum=64K"] }, BAD));
  it("blocksize-error-policy=error without constraints allows everything", () =>
    checkSame({ filters: ["blocksize-policy"], plugin: MEM, params: ["blocksize-error-policy=error"] }, BAD));
  it("over the blocksize filter (its manual's example): small requests become whole-block cycles below", () =>
    checkSame(
      { filters: ["blocksize-policy", "blocksize"], plugin: MEM, params: ["blocksize-error-policy=allow", "blocksize-minimum=64K", "minblock=64K"] },
      UNALIGNED,
    ));
  it.each([
    ["blocksize-minimum=3"], ["blocksize-minimum=128K"], ["blocksize-preferred=256"], ["blocksize-preferred=64M"],
    ["blocksize-minimum=8K", "blocksize-preferred=4K"], ["blocksize-preferred=64K", "blocksize-maximum=32K"],
    ["blocksize-error-policy=sometimes"], ["blocksize-maximum=5G"],
  ])("%s stops the server", (...params) => checkSame({ filters: ["blocksize-policy"], plugin: MEM, params }));
});

describe.skipIf(!ready)("blocksize-policy filter: after nbdkit 1.32 (nbdstate)", () => {
  const nbdstate = async (params: string[], ops: Op[], plugin = MEM) => (await runBoth({ filters: ["blocksize-policy"], plugin, params }, ops)).nbdstate;

  it("blocksize-write-disconnect=N: a larger write cuts the connection; smaller ones are served", async () => {
    const r = await nbdstate(["blocksize-write-disconnect=64K"], [["pwrite", 0, 65536, 1], ["pwrite", 0, 65537, 1], ["pread", 0, 512]]);
    expect(r.probe!.ops![0]).toBe("ok");
    expect(r.probe!.ops![1]).toMatch(/^E:(ENOTCONN|ESHUTDOWN)$/);
    expect(r.probe!.ops![2]).toMatch(/^E:/); // the connection is gone
    // With a minimum but no maximum, the advertised maximum is the disconnect size.
    const s = await nbdstate(["blocksize-minimum=512", "blocksize-write-disconnect=100000"], []);
    expect([s.info!.block_size_minimum, s.info!.block_size_maximum]).toEqual([512, 100000 - (100000 % 512)]);
  });

  it("error lets the short last block of an odd-sized disk be reached; strict-error does not", async () => {
    const ops: Op[] = [["strict", 0], ["pread", 1024, 1000 - 1024 + 1024 - 24], ["pwrite", 1024, 976, 1], ["pread", 1024, 512]];
    const plugin = ["memory", "2000"];
    const e = await nbdstate(["blocksize-error-policy=error", "blocksize-minimum=512"], ops, plugin);
    expect(e.probe!.ops!.slice(1)).toEqual([expect.stringMatching(/^[0-9a-f]{16}$/), "ok", expect.stringMatching(/^[0-9a-f]{16}$/)]);
    const s = await nbdstate(["blocksize-error-policy=strict-error", "blocksize-minimum=512"], ops, plugin);
    expect(s.probe!.ops!.slice(1)).toEqual(["E:EINVAL", "E:EINVAL", expect.stringMatching(/^[0-9a-f]{16}$/)]);
  });

  it("a maximum that is not a multiple of the minimum stops the server (nbdkit 1.32.5 lets it through)", async () => {
    const r = await runBoth({ filters: ["blocksize-policy"], plugin: MEM, params: ["blocksize-minimum=512", "blocksize-maximum=1000"] });
    expect(r.nbdstate.startError).toMatch(/blocksize-maximum must be -1 or a multiple of blocksize-minimum/);
    expect(r.nbdkit.startError).toBeNull();
  });
});
