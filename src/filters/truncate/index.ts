// truncate filter: change the size of the layer below (nbdkit-truncate-filter).
//   truncate=SIZE   the new size, smaller or larger than the plugin's
//   round-up=N      round the size up to a multiple of N (a power of 2)
//   round-down=N    round the size down to a multiple of N
// Past the plugin's end the disk reads as zeroes; writing zeroes there
// succeeds, writing anything else fails with ENOSPC. Requests that lie
// wholly inside the plugin go down unchanged.

import { clipExtents } from "../../backend/extents.js";
import { parseSize } from "../../backend/size.js";
import { FLAG_FAST_ZERO, NbdError, type Context, type Filter } from "../../backend/types.js";
import { NBD_ENOSPC, NBD_ENOTSUP } from "../../protocol/constants.js";
import { isZero } from "../kit/zeros.js";

interface TruncateHandle {
  /** The plugin's size, read at prepare. */
  real: number;
  /** The size served. */
  size: number;
}

const MAX = Number.MAX_SAFE_INTEGER;

export default function createFilter(): Filter<TruncateHandle> {
  let truncate = -1;
  let roundUp = 0;
  let roundDown = 0;

  function parseRound(key: string, value: string): number {
    let n: number;
    try {
      n = parseSize(value);
    } catch (e) {
      throw new Error(`truncate: ${key}: ${(e as Error).message}`);
    }
    if (n === 0) throw new Error(`truncate: if set, the ${key} parameter must be > 0`);
    if (n > 0xffffffff) throw new Error(`truncate: the ${key} parameter is too large`);
    if ((n & (n - 1)) !== 0) throw new Error(`truncate: the ${key} parameter must be a power of 2`);
    return n;
  }

  return {
    name: "truncate",
    version: "1.0.0",
    longname: "nbdstate truncate filter",
    description: "Change the size of the underlying plugin.",
    configHelp:
      "truncate=<SIZE>                The new size.\n" +
      "round-up=<N>                   Round up to next multiple of N.\n" +
      "round-down=<N>                 Round down to multiple of N.",

    config(next, key, value) {
      switch (key) {
        case "truncate":
          try {
            truncate = parseSize(value);
          } catch (e) {
            throw new Error(`truncate: truncate: ${(e as Error).message}`);
          }
          return;
        case "round-up":
          roundUp = parseRound(key, value);
          return;
        case "round-down":
          roundDown = parseRound(key, value);
          return;
        default:
          return next(key, value);
      }
    },

    open() {
      return { real: 0, size: 0 };
    },

    // The size is fixed per connection, as nbdkit: read once here.
    async prepare(next, h) {
      h.real = await next.getSize();
      let size = truncate >= 0 ? truncate : h.real;
      if (roundUp > 0) {
        const up = Math.ceil(size / roundUp) * roundUp;
        if (up > MAX) throw new Error(`truncate: cannot round size ${size} up to next boundary of ${roundUp}`);
        size = up;
      }
      if (roundDown > 0) size = Math.floor(size / roundDown) * roundDown;
      h.size = size;
    },

    getSize(_next, h) {
      return h.size;
    },
    // The tail past the plugin always has extents (a hole) and zeroes fast.
    async canExtents(next) {
      await next.canExtents();
      return true;
    },
    async canFastZero(next) {
      await next.canFastZero();
      return true;
    },

    pread(next, h, buf, offset, flags) {
      const end = offset + buf.length;
      if (end <= h.real) return next.pread(buf, offset, flags);
      const inside = Math.max(0, h.real - offset);
      buf.fill(0, inside);
      return inside > 0 ? next.pread(buf.subarray(0, inside), offset, flags) : undefined;
    },

    pwrite(next, h, buf, offset, flags) {
      const end = offset + buf.length;
      if (end <= h.real) return next.pwrite(buf, offset, flags);
      const inside = Math.max(0, h.real - offset);
      if (!isZero(buf.subarray(inside))) {
        throw new NbdError(NBD_ENOSPC, "truncate: write beyond end of underlying device");
      }
      return inside > 0 ? next.pwrite(buf.subarray(0, inside), offset, flags) : undefined;
    },

    trim(next, h, count, offset, flags) {
      if (offset >= h.real) return;
      return next.trim(Math.min(count, h.real - offset), offset, flags);
    },

    zero(next, h, count, offset, flags) {
      if (offset >= h.real) return;
      const n = Math.min(count, h.real - offset);
      if (flags & FLAG_FAST_ZERO) return fastZero(next, n, offset, flags);
      return next.zero(n, offset, flags);
    },

    extents(next, h, count, offset, flags) {
      if (offset >= h.real) return [{ length: Math.min(count, h.size - offset), type: 3 }];
      if (offset + count <= h.real) return next.extents(count, offset, flags);
      // Only the part inside the plugin: the client asks again for the rest.
      const n = h.real - offset;
      return next.extents(n, offset, flags).then((list) => clipExtents(list, n));
    },

    cache(next, h, count, offset, flags) {
      if (offset >= h.real) return;
      return next.cache(Math.min(count, h.real - offset), offset, flags);
    },
  };
}

/** canFastZero says yes (the tail is fast), so the part inside must be fast below. */
async function fastZero(next: Context, count: number, offset: number, flags: number): Promise<void> {
  if (!(await next.canFastZero())) throw new NbdError(NBD_ENOTSUP, "truncate: fast zero is not supported by the plugin");
  await next.zero(count, offset, flags);
}
