// offset filter: serve the byte range [offset, offset + range) of the layer
// below as a whole disk.

import type { Filter, Context, Extent } from "../../backend/types.js";
import { parseSize } from "../../backend/size.js";

interface OffsetHandle {
  /** Size of the served window, computed at prepare (or first getSize). */
  size: number;
}

export default function createFilter(): Filter<OffsetHandle> {
  let offset = 0;
  let range: number | undefined;

  /** The window's size over a lower layer of `real` bytes, or throw. */
  function windowSize(real: number): number {
    if (real < offset) {
      throw new Error(`offset: offset (${offset}) is larger than the real size (${real}) of the underlying file or device`);
    }
    if (range === undefined) return real - offset;
    if (offset + range > real) {
      throw new Error(
        `offset: offset + range (${offset} + ${range}) is larger than the real size (${real}) of the underlying file or device`,
      );
    }
    return range;
  }

  async function sizeOf(next: Context, h: OffsetHandle): Promise<number> {
    if (h.size < 0) h.size = windowSize(await next.getSize());
    return h.size;
  }

  return {
    name: "offset",
    version: "1.0.0",
    longname: "nbdstate offset filter",
    description: "Serve only a byte range of the underlying plugin.",
    configHelp:
      "offset=<OFFSET>      The start offset to serve (default 0).\n" +
      "range=<LENGTH>       The total size to serve (default: to the end).",

    config(next, key, value) {
      if (key === "offset" || key === "range") {
        let n: number;
        try {
          n = parseSize(value);
        } catch (e) {
          throw new Error(`offset: ${key}: ${(e as Error).message}`);
        }
        if (key === "offset") offset = n;
        else range = n;
        return;
      }
      return next(key, value);
    },

    open() {
      return { size: -1 };
    },

    async prepare(next, h) {
      h.size = -1;
      await sizeOf(next, h); // refuse a window beyond the end before any I/O
    },

    getSize(next, h) {
      return sizeOf(next, h);
    },

    pread(next, _h, buf, off, flags) {
      return next.pread(buf, off + offset, flags);
    },
    pwrite(next, _h, buf, off, flags) {
      return next.pwrite(buf, off + offset, flags);
    },
    trim(next, _h, count, off, flags) {
      return next.trim(count, off + offset, flags);
    },
    zero(next, _h, count, off, flags) {
      return next.zero(count, off + offset, flags);
    },
    cache(next, _h, count, off, flags) {
      return next.cache(count, off + offset, flags);
    },

    async extents(next, _h, count, off, flags): Promise<Extent[]> {
      const lower = await next.extents(count, off + offset, flags);
      // Offsets are relative, so the list carries over; only clip the end
      // so nothing beyond the requested range (and the window) leaks out.
      const out: Extent[] = [];
      let total = 0;
      for (const e of lower) {
        if (total >= count) break;
        const length = Math.min(e.length, count - total);
        if (length <= 0) continue;
        out.push(length === e.length ? e : { length, type: e.type });
        total += length;
      }
      return out;
    },
  };
}
