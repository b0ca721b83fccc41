// cow filter (nbdkit-cow-filter): a writable copy-on-write overlay over a
// layer below that is opened read-only and never written. All connections
// to one export share one overlay (as nbdkit >= 1.44: one per export
// name); overlays live until the server exits. See overlay.ts.

import { existsSync } from "node:fs";
import { parseBool } from "../../backend/size.js";
import type { BlockSize, Filter, LowerBackend } from "../../backend/types.js";
import { parseBlockSizeParam } from "../kit/block-size.js";
import { TempFile } from "../kit/tmpfile.js";
import { ALLOCATION_DEPTH, Overlay, type CacheMode } from "./overlay.js";

interface CowHandle {
  exportName: string;
  ov: Overlay | null;
  /** Whether the layer below serves qemu:allocation-depth itself (asked on first use). */
  belowDepth?: boolean;
}

function ov(h: CowHandle): Overlay {
  if (!h.ov) throw new Error("cow: request before the overlay was set up");
  return h.ov;
}

export default function createFilter(): Filter<CowHandle> {
  let blksize = 65536;
  let cowOnCache = false;
  /** cow-on-read: false, true, or an absolute path whose existence says. */
  let cor: boolean | string = false;
  const overlays = new Map<string, Promise<Overlay>>();
  let lower: LowerBackend | undefined;

  const copyOnRead = (): boolean => (typeof cor === "string" ? existsSync(cor) : cor);

  async function overlayFor(name: string, size: number): Promise<Overlay> {
    let p = overlays.get(name);
    if (!p) {
      p = Overlay.create(size, blksize);
      overlays.set(name, p);
      p.catch(() => {
        if (overlays.get(name) === p) overlays.delete(name);
      });
    }
    const o = await p;
    if (o.size !== size) {
      throw new Error(`cow: the size of export '${name.slice(0, 256)}' below changed from ${o.size} to ${size}: the layer below must not be resized`);
    }
    return o;
  }

  return {
    name: "cow",
    version: "1.0.0",
    longname: "nbdstate copy-on-write (COW) filter",
    description: "Writes go to a temporary overlay; the layer below is opened read-only and never written.",
    configHelp:
      "cow-block-size=<N>       Set COW block size.\n" +
      "cow-on-cache=<BOOL>      Copy cache (prefetch) requests to the overlay.\n" +
      "cow-on-read=<BOOL>|/PATH Copy read requests to the overlay.",

    config(next, key, value) {
      switch (key) {
        case "cow-block-size":
          blksize = parseBlockSizeParam("cow", key, value, 4096);
          return;
        case "cow-on-cache":
          try {
            cowOnCache = parseBool(value);
          } catch (e) {
            throw new Error(`cow: cow-on-cache: ${(e as Error).message}`);
          }
          return;
        case "cow-on-read":
          if (value.startsWith("/")) cor = value;
          else {
            try {
              cor = parseBool(value);
            } catch (e) {
              throw new Error(`cow: cow-on-read: ${(e as Error).message} (or an absolute /PATH)`);
            }
          }
          return;
        default:
          return next(key, value);
      }
    },

    async getReady() {
      // As nbdkit, a temporary directory that cannot hold the overlay stops the server at startup.
      await (await TempFile.create("cow")).close();
    },

    afterFork(l) {
      lower = l;
    },

    async unload() {
      const all = [...overlays.values()];
      overlays.clear();
      for (const p of all) await (await p.catch(() => null))?.close();
    },

    async open(a) {
      await a.next(true, a.exportName);
      return { exportName: a.exportName, ov: null };
    },

    async prepare(next, h) {
      h.ov = await overlayFor(h.exportName, await next.getSize());
    },

    getSize(_next, h) {
      return ov(h).size;
    },

    async blockSize(next): Promise<BlockSize | null> {
      const b = await next.blockSize();
      if (!b || b.minimum === 0) return { minimum: 1, preferred: blksize, maximum: 0xffffffff };
      return { ...b, preferred: b.maximum >= blksize ? Math.max(b.preferred, blksize) : b.preferred };
    },

    canWrite: () => true,
    canFlush: () => true,
    canTrim: () => true,
    canZero: () => true,
    // Zeroing whole blocks only changes their state; only a partial block
    // not yet in the overlay needs a read from below (and fails fast zero).
    canFastZero: () => true,
    canFua: () => "native" as const,
    canExtents: () => true,
    canCache: () => "native" as const,
    // One overlay for every connection: what one writes, all read.
    canMultiConn: () => true,

    pread(next, h, buf, offset) {
      return ov(h).read(next, buf, offset, copyOnRead);
    },
    // FUA and flush have nothing to persist: the overlay is thrown away at exit.
    pwrite(next, h, buf, offset) {
      return ov(h).write(next, buf, offset);
    },
    zero(next, h, count, offset, flags) {
      return ov(h).zero(next, count, offset, flags);
    },
    trim(next, h, count, offset) {
      return ov(h).zero(next, count, offset, 0, true);
    },
    flush() {},
    async cache(next, h, count, offset) {
      let mode: CacheMode;
      if (cowOnCache) mode = "cow";
      else {
        const below = await next.canCache();
        mode = below === "native" ? "passthrough" : below === "emulate" ? "read" : "ignore";
      }
      return ov(h).cache(next, count, offset, mode);
    },
    async extents(next, h, count, offset, flags) {
      return ov(h).extents(next, count, offset, flags, await next.canExtents());
    },
    // qemu:allocation-depth, as qemu serves it for a qcow2 overlay over its backing file.
    async metaContexts(lower, exportName) {
      const below = await lower.metaContexts(exportName);
      return below.includes(ALLOCATION_DEPTH) ? below : [...below, ALLOCATION_DEPTH];
    },
    async contextExtents(next, h, context, count, offset, flags) {
      if (context !== ALLOCATION_DEPTH) return next.contextExtents(context, count, offset, flags);
      h.belowDepth ??= lower ? (await lower.metaContexts(h.exportName)).includes(ALLOCATION_DEPTH) : false;
      return ov(h).allocationDepth(next, count, offset, flags, h.belowDepth);
    },
  };
}
