// sparse-random plugin: a sparse disk shaped like a virtual machine's,
// runs of random data between runs of holes (runs.ts), for benchmarking
// copying tools. Writes succeed only if they write what is already there
// (EIO otherwise); trim and zero succeed only over holes.

import { randomInt } from "node:crypto";
import { NbdError, FLAG_REQ_ONE } from "../../backend/types.js";
import type { Plugin, Extent, ReadPiece } from "../../backend/types.js";
import { NBD_EIO } from "../../protocol/constants.js";
import { parseBool, parseSize } from "../../backend/size.js";
import { parseUnsigned } from "../kit/integer.js";
import { fillRandom, randomWord, streamKey } from "../kit/hash-random.js";
import { BLOCK, RunMap } from "./runs.js";

const HOLE_ZERO = 3; // NBD_STATE_HOLE | NBD_STATE_ZERO
const BYTE_STREAM = 0x42595445; // "BYTE": the byte of each block
const CONTENT_STREAM = 0x434f4e54; // "CONT": random-content=true bytes

/** percent=N: a number from 0 to 100, optionally followed by '%'. */
function parsePercent(value: string): number {
  const t = value.trim().replace(/%$/, "").trim();
  const n = /^[0-9.eE+-]+$/.test(t) ? Number(t) : NaN;
  if (!(n >= 0 && n <= 100)) throw new Error(`sparse-random: cannot parse percent parameter (0 to 100): '${value}'`);
  return n;
}

export interface SparseRandomPlugin extends Plugin<true> {
  readonly seed: number;
  /** The layout (after getReady). */
  readonly map: RunMap | undefined;
}

export default function createPlugin(): SparseRandomPlugin {
  let size: number | undefined;
  let seed = randomInt(0x1_0000_0000);
  let percent = 10;
  let runlength = 16 << 20;
  let randomContent = false;
  let map: RunMap | undefined;
  let byteKey = 0;
  let contentKey = 0;

  /** Fill the data pieces of [offset, offset + buf.length) into buf; the pieces. */
  function readData(buf: Buffer, offset: number): ReadPiece[] {
    const out: ReadPiece[] = [];
    for (const p of map!.pieces(offset, buf.length)) {
      out.push({ length: p.length, hole: !p.data });
      if (!p.data) continue;
      const at = p.offset - offset;
      if (randomContent) {
        fillRandom(buf.subarray(at, at + p.length), p.offset, contentKey);
        continue;
      }
      // One nonzero byte per block, a function of the block number only.
      let pos = p.offset;
      const end = p.offset + p.length;
      while (pos < end) {
        const block = Math.floor(pos / BLOCK);
        const next = Math.min(end, (block + 1) * BLOCK);
        buf.fill(1 + (randomWord(byteKey, block) % 255), pos - offset, next - offset);
        pos = next;
      }
    }
    return out;
  }

  function onlyHoles(count: number, offset: number): void {
    for (const p of map!.pieces(offset, count)) {
      if (p.data) throw new NbdError(NBD_EIO, "sparse-random: trying to trim or zero non-hole in disk");
    }
  }

  return {
    name: "sparse-random",
    version: "1.0.0",
    longname: "nbdstate sparse-random plugin",
    description: "A sparse disk of random data runs and holes; writes must match what is there.",
    magicConfigKey: "size",
    configHelp:
      "size=<SIZE>          (required) Size of the virtual disk.\n" +
      "seed=<SEED>          Random seed, 0..4294967295 (default: chosen at random).\n" +
      "percent=<PERCENT>    Percentage of the disk that is data (default 10).\n" +
      "runlength=<SIZE>     Average length of a data run (default 16M).\n" +
      "random-content=true  Random bytes in each block, not one repeated byte.",
    get seed() {
      return seed;
    },
    get map() {
      return map;
    },

    config(key, value) {
      switch (key) {
        case "size":
        case "runlength": {
          let n: number;
          try {
            n = parseSize(value);
          } catch (e) {
            throw new Error(`sparse-random: ${key}: ${(e as Error).message}`);
          }
          if (key === "size") size = n;
          else if (n <= 0) throw new Error("sparse-random: runlength parameter must be > 0");
          else runlength = n;
          return;
        }
        case "seed":
          seed = parseUnsigned("sparse-random: seed", value, 0xffffffffn);
          return;
        case "percent":
          percent = parsePercent(value);
          return;
        case "random-content":
          try {
            randomContent = parseBool(value);
          } catch (e) {
            throw new Error(`sparse-random: random-content: ${(e as Error).message}`);
          }
          return;
        default:
          throw new Error(`sparse-random: unknown parameter '${key}'`);
      }
    },
    configComplete() {
      if (size === undefined) throw new Error("sparse-random: size parameter is required");
    },
    getReady() {
      map = RunMap.generate(size!, seed, percent, runlength);
      byteKey = streamKey(seed, BYTE_STREAM);
      contentKey = streamKey(seed, CONTENT_STREAM);
    },
    afterFork(server) {
      const s = map!.stats();
      const actual = size! > 0 ? (100 * s.dataBytes) / size! : 0;
      server.debug(
        `sparse-random: seed=${seed} percent requested=${percent} actual=${actual.toFixed(3)} ` +
          `runlength requested=${runlength} actual=${Math.round(s.meanRun)} (${s.runs} data runs)`,
      );
    },
    unload() {
      map = undefined;
    },

    listExports: () => [{ name: "" }],
    defaultExport: () => "",
    open: () => true,

    getSize: () => size!,
    canWrite: () => true,
    canFlush: () => true,
    isRotational: () => false,
    canTrim: () => true,
    canZero: () => true,
    canFastZero: () => false,
    canFua: () => "native",
    canMultiConn: () => true,
    canExtents: () => true,
    canCache: () => "native",

    pread(_h, buf, offset) {
      const pieces = readData(buf, offset);
      let at = 0;
      for (const p of pieces) {
        if (p.hole) buf.fill(0, at, at + p.length);
        at += p.length;
      }
    },
    preadSparse(_h, buf, offset) {
      return readData(buf, offset);
    },
    pwrite(_h, buf, offset) {
      const expected = Buffer.alloc(buf.length);
      readData(expected, offset);
      if (!expected.equals(buf)) throw new NbdError(NBD_EIO, "sparse-random: data written does not match expected");
    },
    // flush is needed for nbdcopy --flush; nothing is stored.
    flush() {},
    trim(_h, count, offset) {
      onlyHoles(count, offset);
    },
    zero(_h, count, offset) {
      onlyHoles(count, offset);
    },
    extents(_h, count, offset, flags): Extent[] {
      const pieces = map!.pieces(offset, count);
      const one = (flags & FLAG_REQ_ONE) !== 0;
      return (one ? pieces.slice(0, 1) : pieces).map((p) => ({ length: p.length, type: p.data ? 0 : HOLE_ZERO }));
    },
    cache() {},
  };
}
