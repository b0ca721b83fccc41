// swab filter (nbdkit-swab-filter): swap the bytes of every 16-, 32- or
// 64-bit word (swab-bits=16, the default, 32 or 64; 8 turns it off). As
// nbdkit: the size is rounded down to a whole word, requests must be
// word-aligned (EINVAL otherwise; put a blocksize filter above for byte
// access), the minimum block size advertised is one word, and block status
// is reported in whole words.

import { NbdError, type BlockSize, type Filter } from "../../backend/types.js";
import { NBD_EINVAL } from "../../protocol/constants.js";
import { alignedExtents } from "../kit/aligned-extents.js";

export default function createFilter(): Filter<void> {
  let bits = 16;
  let width = 2;

  function check(count: number, offset: number): void {
    if (count % width !== 0 || offset % width !== 0) {
      throw new NbdError(NBD_EINVAL, `swab: requests to this filter must be aligned to ${width} bytes`);
    }
  }

  /** Swap in place (buf.length is a multiple of width). */
  function swap(buf: Buffer): Buffer {
    if (bits === 16) return buf.swap16();
    if (bits === 32) return buf.swap32();
    return buf.swap64();
  }

  const f: Filter<void> = {
    name: "swab",
    version: "1.0.0",
    longname: "nbdstate byte-swapping filter",
    description: "Swap the bytes of every 16-, 32- or 64-bit word.",
    configHelp: "swab-bits=8|16|32|64       Size of byte swap (default 16).",

    config(next, key, value) {
      if (key !== "swab-bits") return next(key, value);
      const n = /^\s*[0-9]+\s*$/.test(value) ? Number(value) : NaN;
      if (n !== 8 && n !== 16 && n !== 32 && n !== 64) {
        throw new Error(`swab: invalid swab-bits, must be 8, 16, 32 or 64: '${value}'`);
      }
      bits = n;
      width = n / 8;
    },

    configComplete(next) {
      if (bits === 8) {
        // Turned off: requests pass straight through, at no cost.
        for (const k of ["getSize", "pread", "pwrite", "trim", "zero", "extents", "cache"] as const) delete f[k];
      }
      return next();
    },

    async getSize(next) {
      const size = await next.getSize();
      return size - (size % width);
    },

    async blockSize(next): Promise<BlockSize | null> {
      const b = await next.blockSize();
      if (!b || b.minimum === 0) return { minimum: width, preferred: 512, maximum: 0xffffffff };
      return { ...b, minimum: Math.max(b.minimum, width) };
    },

    async pread(next, _h, buf, offset, flags) {
      check(buf.length, offset);
      await next.pread(buf, offset, flags);
      swap(buf);
    },

    pwrite(next, _h, buf, offset, flags) {
      check(buf.length, offset);
      // The client's buffer is not ours to change: swap a copy.
      return next.pwrite(swap(Buffer.from(buf)), offset, flags);
    },

    trim(next, _h, count, offset, flags) {
      check(count, offset);
      return next.trim(count, offset, flags);
    },

    zero(next, _h, count, offset, flags) {
      check(count, offset);
      return next.zero(count, offset, flags);
    },

    cache(next, _h, count, offset, flags) {
      check(count, offset);
      return next.cache(count, offset, flags);
    },

    extents(next, _h, count, offset, flags) {
      check(count, offset);
      return alignedExtents(next, count, offset, flags, width);
    },
  };
  return f;
}
