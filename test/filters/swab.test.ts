// The swab filter: bytes of every 16/32/64-bit word swapped, requests
// word-aligned (EINVAL otherwise), the size rounded down to a word, block
// status in whole words. Differential against nbdkit's swab filter, then
// the bytes themselves, the client's write buffer left alone, swab-bits=8.
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { Plugin } from "../../src/backend/types.js";
import createSwab from "../../src/filters/swab/index.js";
import { makeTmpDir, runCli } from "../helpers/server.js";
import { runningStack } from "../helpers/stack.js";
import { expectSameInfo, expectSameReplies, pyOut, startPair, stateTools } from "./state-helpers.js";

const ok = stateTools();

describe.skipIf(!ok)("swab filter: the same command line as nbdkit", () => {
  for (const bits of [16, 32, 64]) {
    it(`swab-bits=${bits} over memory: flags, block size, and 250 requests (some unaligned) give the same replies and bytes`, async () => {
      const pair = await startPair(["--filter=swab", "memory", "2M", `swab-bits=${bits}`]);
      try {
        const info = await expectSameInfo(pair);
        expect(info.block_size_minimum).toBe(bits / 8);
        await expectSameReplies(pair, bits, 250, ["--align=" + bits / 8, "--unaligned=0.2", "--maxlen=65536"]);
      } finally {
        await pair.stop();
      }
    });
  }

  it("block status in whole words: extents below that end inside a word are merged (types ANDed), as nbdkit", async () => {
    const dir = makeTmpDir();
    const list = join(dir, "extents");
    // Boundaries at odd offsets, so that most words straddle two extents.
    const lines: string[] = [];
    let off = 0;
    let k = 0;
    while (off < 1 << 20) {
      const len = 1 + ((k * 7919) % 5000);
      lines.push(`${off} ${len} ${["", "hole", "zero", "hole,zero"][k % 4]}`);
      off += len;
      k++;
    }
    writeFileSync(list, lines.join("\n") + "\n");
    const pair = await startPair(["--filter=swab", "--filter=extentlist", "memory", "1M", `extentlist=${list}`, "swab-bits=64"]);
    try {
      await expectSameReplies(pair, 4, 200, ["--align=8", "--ops=status,status,read", "--exact-status", "--maxlen=30000"]);
    } finally {
      await pair.stop();
    }
  });

  it("over pattern and over a file of odd size: the same size (rounded down to a word) and bytes", async () => {
    const dir = makeTmpDir();
    const file = join(dir, "odd.img");
    writeFileSync(file, randomBytes(100_003));
    for (const args of [["pattern", "1M", "swab-bits=64"], ["file", file, "swab-bits=32"]]) {
      const pair = await startPair(["--filter=swab", ...args]);
      try {
        // Rotational and fast zero are the file plugin's answers, not the filter's.
        const info = await expectSameInfo(pair, {}, ["is_rotational", "can_fast_zero"]);
        if (args[0] === "file") expect(info["export-size"]).toBe(100_000);
        await expectSameReplies(pair, 7, 100, ["--align=8", "--ops=read,read,write,status,oob", "--maxlen=20000"]);
      } finally {
        await pair.stop();
      }
    }
  });

  it("bad swab-bits fail to start with one line", async () => {
    for (const v of ["12", "sixteen", "128", ""]) {
      const r = await runCli(["--filter=swab", "memory", "1M", `swab-bits=${v}`, "--run", "true"]);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/swab: invalid swab-bits/);
      expect(r.stderr.trim().split("\n").length).toBe(1);
    }
  });
});

describe.skipIf(!ok)("swab filter: the bytes", () => {
  it("swab-bits=64 makes the pattern plugin little endian; 16 swaps pairs; 8 passes everything through, unaligned too", async () => {
    const { startServer } = await import("../helpers/server.js");
    const s64 = await startServer(["--filter=swab", "pattern", "1M", "swab-bits=64"]);
    const s16 = await startServer(["--filter=swab", "pattern", "1M"]);
    const s8 = await startServer(["--filter=swab", "pattern", "1M", "swab-bits=8"]);
    try {
      const script = `
h = connect()
print(h.pread(16, 4096).hex())
try:
    print(h.pread(3, 4101).hex())
except nbd.Error as e:
    print("errno", e.errnum)`;
      expect((await pyOut(script, s64.uri)).trim().split("\n")).toEqual(["00100000000000000810000000000000", "errno 22"]);
      expect((await pyOut(script, s16.uri)).trim().split("\n")).toEqual(["00000000000000100000000000000810", "errno 22"]);
      expect((await pyOut(script, s8.uri)).trim().split("\n")).toEqual(["00000000000010000000000000001008", "001000"]);
    } finally {
      await Promise.all([s64.stop(), s16.stop(), s8.stop()]);
    }
  });

  it("a write swaps a copy: the buffer the client's request came in is not changed (in-process)", async () => {
    const disk = Buffer.alloc(4096);
    const plugin: Plugin = {
      name: "buf",
      open: () => ({}),
      getSize: () => disk.length,
      pread: (_h, b, o) => void disk.copy(b, 0, o, o + b.length),
      pwrite: (_h, b, o) => void b.copy(disk, o),
    };
    const stack = await runningStack(plugin, [createSwab()], [["swab-bits", "32"]]);
    const o = await stack.open(false, "", false);
    const buf = Buffer.from("abcdefgh");
    await o.ctx.pwrite(buf, 8, 0);
    expect(buf.toString()).toBe("abcdefgh");
    expect(disk.subarray(8, 16).toString()).toBe("dcbahgfe");
    const back = Buffer.alloc(8);
    await o.ctx.pread(back, 8, 0);
    expect(back.toString()).toBe("abcdefgh");
    await stack.close(o);
    await stack.unload();
  });
});
