// The common shape of the read-only decoding filters (gzip, xz, bzip2,
// lzip, zstd, qcow2dec): a format module turns the data below into a
// DecodedImage; this file makes it a Filter.
//
// One image per export of the layer below, built by the first client that
// opens it (later clients wait for the same build) and kept until the
// filter's cleanup, so its index, cache and temporary file serve every
// client. The image reads the data below through its own shared context,
// so a client disconnecting never breaks a decode another client waits on.
// A build that fails (a corrupt file) is not remembered: the next client
// tries again and gets the same clear error.

import { errorMessage } from "../../../backend/errors.js";
import {
  FLAG_REQ_ONE, NbdError, type Context, type Extent, type Filter, type LowerBackend, type ServerServices,
} from "../../../backend/types.js";
import { NBD_EINVAL, NBD_EIO } from "../../../protocol/constants.js";
import type { DecodedImage } from "./image.js";
import { DecodeError, Source } from "./reader.js";

export interface DecoderSpec {
  name: string;
  description: string;
  configHelp?: string;
  /** Take a parameter: return true if it was this filter's. */
  config?(key: string, value: string): boolean;
  configComplete?(): void;
  /** Build the image of one export from its data below. */
  openImage(src: Source, debug: (msg: string) => void): Promise<DecodedImage>;
}

interface Built {
  ctx: Context;
  image: DecodedImage;
}

interface Entry {
  built: Promise<Built>;
  /** Clients holding it; at 0 it stays cached but may be evicted for another export. */
  refs: number;
}

export interface DecodeHandle {
  image: DecodedImage;
  entry: Entry;
  /** This client's reference to the shared context below (closed at close). */
  ctx: Context;
  lower: LowerBackend;
}

/** Images kept at most (one per export below); unused ones are evicted first. */
const MAX_IMAGES = 64;

export function decodeFilter(spec: DecoderSpec): Filter<DecodeHandle> {
  const images = new Map<string, Entry>();
  let lowerSeen: LowerBackend | null = null;
  let services: ServerServices | null = null;
  const name = spec.name;

  /** Any error while decoding, as the client should see it. */
  function asIo(err: unknown): unknown {
    if (err instanceof NbdError) return err;
    if (err instanceof DecodeError) return new NbdError(NBD_EIO, err.message);
    // A decoder library's own exception (corrupt data): EIO with its message.
    return new NbdError(NBD_EIO, `${name}: ${errorMessage(err)}`);
  }

  async function release(b: Built): Promise<void> {
    await b.image.dispose?.().catch(() => {});
    if (lowerSeen) await lowerSeen.close(b.ctx).catch(() => {});
  }

  function image(lower: LowerBackend, exportName: string, tls: boolean): Entry {
    const hit = images.get(exportName);
    if (hit) {
      // Most recently used last, for eviction.
      images.delete(exportName);
      images.set(exportName, hit);
      return hit;
    }
    if (images.size >= MAX_IMAGES) {
      const idle = [...images].find(([, e]) => e.refs === 0);
      if (!idle) throw new NbdError(NBD_EINVAL, `${name}: too many exports below open at once (limit ${MAX_IMAGES})`);
      images.delete(idle[0]);
      void idle[1].built.then(release, () => {});
    }
    const built = (async () => {
      const ctx = await lower.open({ readonly: true, exportName, tls, shared: true });
      try {
        const img = await spec.openImage(await Source.open(ctx, name), (m) => services?.debug(`${name}: ${m}`));
        services?.debug(`${name}: export '${exportName.slice(0, 256)}': ${img.size} bytes, ${img.summary}`);
        return { ctx, image: img };
      } catch (err) {
        await lower.close(ctx).catch(() => {});
        if (err instanceof NbdError) throw err;
        throw new NbdError(NBD_EINVAL, err instanceof DecodeError ? err.message : `${name}: ${errorMessage(err)}`);
      }
    })();
    const entry: Entry = { built, refs: 0 };
    images.set(exportName, entry);
    built.catch(() => {
      if (images.get(exportName) === entry) images.delete(exportName);
    });
    return entry;
  }

  return {
    name,
    version: "1.0.0",
    longname: `nbdstate ${name} filter`,
    description: spec.description,
    configHelp: spec.configHelp,

    config(next, key, value) {
      if (spec.config?.(key, value)) return;
      return next(key, value);
    },

    configComplete(next) {
      spec.configComplete?.();
      return next();
    },

    afterFork(lower, server) {
      lowerSeen = lower;
      services = server;
    },

    async cleanup() {
      const all = [...images.values()];
      images.clear();
      for (const e of all) {
        const b = await e.built.catch(() => null);
        if (b) await release(b);
      }
    },

    async open(a) {
      const exportName = a.exportName === "" ? ((await a.lower.defaultExport({ readonly: true, tls: a.tls })) ?? "") : a.exportName;
      const entry = image(a.lower, exportName, a.tls);
      entry.refs++;
      try {
        const built = await entry.built;
        const ctx = await a.lower.open({ readonly: true, exportName, tls: a.tls, shared: true });
        a.use(ctx);
        return { image: built.image, entry, ctx, lower: a.lower };
      } catch (err) {
        entry.refs--;
        throw err;
      }
    },

    async close(h) {
      h.entry.refs--;
      await h.lower.close(h.ctx);
    },

    getSize(_next, h) {
      return h.image.size;
    },
    canWrite() {
      return false;
    },
    canTrim() {
      return false;
    },
    canZero() {
      return false;
    },
    canFastZero() {
      return false;
    },
    canFua() {
      return "none";
    },
    canMultiConn() {
      // Read-only and the same bytes for every client.
      return true;
    },
    canExtents() {
      return true;
    },
    canCache() {
      // A cache request reads (decodes) the blocks, warming the block cache.
      return "emulate";
    },
    blockSize() {
      // The constraints of the compressed data below do not apply to the image.
      return null;
    },

    async pread(_next, h, buf, offset) {
      try {
        await h.image.pread(buf, offset);
      } catch (err) {
        throw asIo(err);
      }
    },

    async extents(_next, h, count, offset, flags): Promise<Extent[]> {
      if (!h.image.extents) return [{ length: Math.min(count, h.image.size - offset), type: 0 }];
      try {
        return await h.image.extents(count, offset, (flags & FLAG_REQ_ONE) !== 0);
      } catch (err) {
        throw asIo(err);
      }
    },
  };
}

/** Parse a positive integer parameter (a count). */
export function parseCount(filter: string, key: string, value: string, min = 1): number {
  if (!/^[0-9]+$/.test(value) || !Number.isSafeInteger(Number(value)) || Number(value) < min) {
    throw new Error(`${filter}: ${key}: must be an integer >= ${min}: '${value}'`);
  }
  return Number(value);
}
