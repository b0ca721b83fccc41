// cache filter (nbdkit-cache-filter): keep blocks of the layer below in a
// temporary file, so a slow plugin is asked as little as possible.
//
//   cache=writeback    writes stay in the cache until a flush (default)
//   cache=writethrough writes go below at once (and into the cache)
//   cache=unsafe       flushes are ignored; writes go below only when
//                      the cache has to make room
//
// One cache per export, shared by all connections. See store.ts.

import { existsSync } from "node:fs";
import { parseBool, parseSize } from "../../backend/size.js";
import { FLAG_FAST_ZERO, FLAG_FUA, NbdError, type BlockSize, type Filter, type ServerServices } from "../../backend/types.js";
import { NBD_ENOTSUP } from "../../protocol/constants.js";
import { TempFile } from "../kit/tmpfile.js";
import { BlockCache, type Limits, type Mode } from "./store.js";

interface CacheHandle {
  exportName: string;
  c: BlockCache | null;
  /** Counted in c.users (from prepare until finalize, or close when finalize never came). */
  counted: boolean;
}

function cache(h: CacheHandle): BlockCache {
  if (!h.c) throw new Error("cache: request before the cache was set up");
  return h.c;
}

export default function createFilter(): Filter<CacheHandle> {
  let mode: Mode = "writeback";
  let minBlockSize = 65536;
  let blksize = 65536;
  let maxSize: number | undefined;
  let hiThresh = 95;
  let loThresh = 80;
  let cor: boolean | string = false;
  let services: ServerServices | null = null;
  const caches = new Map<string, Promise<BlockCache>>();

  const cacheOnRead = (): boolean => (typeof cor === "string" ? existsSync(cor) : cor);

  function limits(): Limits {
    if (maxSize === undefined) return { high: Infinity, low: Infinity };
    return { high: (maxSize * hiThresh) / 100, low: (maxSize * loThresh) / 100 };
  }

  async function cacheFor(name: string, size: number): Promise<BlockCache> {
    let p = caches.get(name);
    if (!p) {
      p = BlockCache.create(size, blksize, mode, limits());
      caches.set(name, p);
      p.catch(() => {
        if (caches.get(name) === p) caches.delete(name);
      });
    }
    const c = await p;
    if (c.size !== size) {
      throw new Error(`cache: the size of export '${name.slice(0, 256)}' below changed from ${c.size} to ${size}`);
    }
    return c;
  }

  const percent = (key: string, value: string): number => {
    if (!/^\s*[0-9]+\s*$/.test(value)) throw new Error(`cache: ${key}: could not parse number: '${value}'`);
    const n = Number(value);
    if (n === 0) throw new Error(`cache: ${key} must be greater than zero`);
    return n;
  };

  const f: Filter<CacheHandle> = {
    name: "cache",
    version: "1.0.0",
    longname: "nbdstate caching filter",
    description: "Cache blocks of the layer below in a temporary file.",
    configHelp:
      "cache=MODE                Set cache MODE, one of writeback (default),\n" +
      "                          writethrough, or unsafe.\n" +
      "cache-on-read=BOOL|/PATH  Set to true to cache on reads (default false).\n" +
      "cache-min-block-size=SIZE Minimum block size of the cache (default 64K).\n" +
      "cache-max-size=SIZE       Set maximum space used by cache.\n" +
      "cache-high-threshold=PCT  Percentage of max size where reclaim begins.\n" +
      "cache-low-threshold=PCT   Percentage of max size where reclaim ends.",

    config(next, key, value) {
      const size = () => {
        try {
          return parseSize(value);
        } catch (e) {
          throw new Error(`cache: ${key}: ${(e as Error).message}`);
        }
      };
      switch (key) {
        case "cache":
          if (value !== "writeback" && value !== "writethrough" && value !== "unsafe") {
            throw new Error(`cache: invalid cache parameter '${value}', should be writeback|writethrough|unsafe`);
          }
          mode = value;
          return;
        case "cache-min-block-size": {
          const n = size();
          if (n < 4096 || n > 2 ** 31 || (n & (n - 1)) !== 0) {
            throw new Error(`cache: cache-min-block-size is not a power of 2, or is too small or too large: '${value}'`);
          }
          minBlockSize = n;
          return;
        }
        case "cache-max-size": {
          const n = size();
          if (n < 1024 * 1024) throw new Error(`cache: cache-max-size is too small (at least 1M): '${value}'`);
          maxSize = n;
          return;
        }
        case "cache-high-threshold":
          hiThresh = percent(key, value);
          return;
        case "cache-low-threshold":
          loThresh = percent(key, value);
          return;
        case "cache-on-read":
          if (value.startsWith("/")) cor = value;
          else {
            try {
              cor = parseBool(value);
            } catch (e) {
              throw new Error(`cache: cache-on-read: ${(e as Error).message} (or an absolute /PATH)`);
            }
          }
          return;
        default:
          return next(key, value);
      }
    },

    configComplete(next) {
      if (maxSize !== undefined && loThresh >= hiThresh) {
        throw new Error("cache: cache-low-threshold must be less than cache-high-threshold");
      }
      // Nothing is dirty in writethrough mode: block status passes straight through.
      if (mode === "writethrough") delete f.extents;
      return next();
    },

    async getReady() {
      // As nbdkit: the block size is at least the temporary file system's,
      // and an unusable temporary directory stops the server at startup.
      await (await TempFile.create("cache")).close();
      blksize = Math.max(minBlockSize, await TempFile.blockSize());
    },

    afterFork(_lower, server) {
      services = server;
    },

    async unload() {
      const all = [...caches.values()];
      caches.clear();
      for (const p of all) await (await p.catch(() => null))?.close();
    },

    async open(a) {
      await a.next();
      return { exportName: a.exportName, c: null, counted: false };
    },

    async prepare(next, h) {
      h.c = await cacheFor(h.exportName, await next.getSize());
      h.c.users++;
      h.counted = true;
    },

    async finalize(next, h) {
      const c = h.c;
      if (!c || !h.counted) return;
      c.users--;
      h.counted = false;
      // The last client has gone: write back what it left, rather than keep
      // it only here (nbdkit keeps it, and loses it when the server exits).
      if (c.users === 0 && c.mode === "writeback" && c.dirty.size > 0) {
        try {
          await c.writeBack(next);
          if (await next.canFlush()) await next.flush(0);
        } catch (e) {
          services?.log(`cache: writing back at disconnect: ${(e as Error).message} (the blocks stay dirty)`);
        }
      }
    },

    close(h) {
      if (h.counted && h.c) h.c.users--;
      h.counted = false;
    },

    getSize(_next, h) {
      return cache(h).size;
    },

    async blockSize(next): Promise<BlockSize | null> {
      const b = await next.blockSize();
      if (!b || b.minimum === 0) return { minimum: 1, preferred: blksize, maximum: 0xffffffff };
      return { ...b, preferred: b.maximum >= blksize ? Math.max(b.preferred, blksize) : b.preferred };
    },

    canCache: () => "native" as const,
    // Advertised, but a zero here always means writing: fast zero is refused.
    canFastZero: () => true,
    canFlush: (next) => (mode === "unsafe" ? true : next.canFlush()),
    canFua: (next) => (mode === "unsafe" ? ("native" as const) : next.canFua()),
    // Writeback and unsafe: one cache for every connection, and a flush
    // writes back all of it. Writethrough: as consistent as the plugin.
    canMultiConn: (next) => (mode === "writethrough" ? next.canMultiConn() : true),

    pread(next, h, buf, offset) {
      return cache(h).read(next, buf, offset, cacheOnRead);
    },
    pwrite(next, h, buf, offset, flags) {
      return cache(h).write(next, buf, buf.length, offset, mode === "unsafe" ? flags & ~FLAG_FUA : flags);
    },
    zero(next, h, count, offset, flags) {
      if (flags & FLAG_FAST_ZERO) throw new NbdError(NBD_ENOTSUP, "cache: fast zero is not supported");
      return cache(h).write(next, null, count, offset, mode === "unsafe" ? flags & ~FLAG_FUA : flags);
    },
    trim(next, h, count, offset, flags) {
      return cache(h).trim(next, count, offset, mode === "unsafe" ? flags & ~FLAG_FUA : flags);
    },
    async flush(next, h) {
      if (mode === "unsafe") return;
      await cache(h).writeBack(next);
      await next.flush(0);
    },
    cache(next, h, count, offset) {
      return cache(h).prefetch(next, count, offset);
    },
    extents(next, h, count, offset, flags) {
      return cache(h).extents(next, count, offset, flags);
    },
  };
  return f;
}
