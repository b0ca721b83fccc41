// null plugin: a bit bucket. Reads return zeros, writes are discarded.

import type { DirectMemory, Plugin, Extent } from "../../backend/types.js";
import { parseSize } from "../../backend/size.js";

const HOLE_ZERO = 3; // NBD_STATE_HOLE | NBD_STATE_ZERO

/** Where WRITE payloads land to be forgotten (any number of them at once: nothing reads it). */
let scratch: Buffer | null = null;
/** The last view handed out (a copy sends one size of WRITE after another: no view made per request). */
let last: Buffer | null = null;
const discard: DirectMemory = {
  view(count, _offset, out) {
    out.push(count);
  },
  target(count, _offset, out) {
    if (last === null || last.length !== count) {
      if (scratch === null || scratch.length < count) scratch = Buffer.allocUnsafe(count);
      last = scratch.subarray(0, count);
    }
    out.push(last);
  },
  release() {},
};

export default function createPlugin(): Plugin<true> {
  let size = 0;

  return {
    name: "null",
    version: "1.0.0",
    longname: "nbdstate null plugin",
    description: "A bit bucket: reads return zeros, writes are discarded.",
    magicConfigKey: "size",
    configHelp: "size=<SIZE>          Size of the virtual disk (default 0).",

    config(key, value) {
      if (key !== "size") throw new Error(`null: unknown parameter '${key}'`);
      try {
        size = parseSize(value);
      } catch (e) {
        throw new Error(`null: size: ${(e as Error).message}`);
      }
    },

    listExports: () => [{ name: "" }],
    defaultExport: () => "",
    open: () => true,

    getSize: () => size,
    canWrite: () => true,
    canFlush: () => true,
    isRotational: () => false,
    canTrim: () => true,
    canZero: () => true,
    canFastZero: () => true,
    canFua: () => "native",
    canMultiConn: () => true,
    canExtents: () => true,
    canCache: () => "native",

    pread(_h, buf) {
      buf.fill(0);
    },
    // Every byte is a hole: a structured read is one OFFSET_HOLE chunk.
    preadSparse: (_h, buf) => [{ length: buf.length, hole: true }],
    pwrite() {},
    flush() {},
    trim() {},
    zero() {},
    extents: (_h, count): Extent[] => [{ length: count, type: HOLE_ZERO }],
    cache() {},
    // The protocol path alone: READs are holes (no bytes to copy), WRITE
    // payloads are read into one scratch buffer per thread and dropped.
    memory: () => discard,
    // Nothing to share: a worker thread's instance is the same bit bucket.
    threads: { share: () => ({}), join() {} },
  };
}
