// The one interface every layer is adapted to (as nbdkit's backend.c has
// one callback table for plugins and filters): pluginOps() here and
// filterOps() (filter-ops.ts)
// turn the public Plugin and Filter objects (types.ts) into LayerOps, and
// fill in nbdkit's documented default for every omitted callback. Nothing
// above this file branches on plugin versus filter.
//
// Data callbacks get the context they run on (a Call: handle, the context
// below, the capabilities) and are only reached through BackendContext,
// which has already checked ranges, flags and capabilities.

import { NBD_EINVAL, NBD_ENOTSUP, NBD_EPERM } from "../protocol/constants.js";
import {
  FLAG_FAST_ZERO, FLAG_FUA, NbdError,
  type BlockSize, type CacheMode, type ConnectionInfo, type Context, type DirectMemory, type ExportEntry, type FuaMode,
  type ListParams, type LowerBackend, type PeerInfo, type Plugin, type ReadPiece, type ServerServices, type Extent,
} from "./types.js";

/** Every capability of an opened context, asked once (as nbdkit caches them per connection). */
export interface Caps {
  size: number;
  canWrite: boolean;
  canFlush: boolean;
  isRotational: boolean;
  canTrim: boolean;
  canZero: boolean;
  canFastZero: boolean;
  canFua: FuaMode;
  canMultiConn: boolean;
  canExtents: boolean;
  canCache: CacheMode;
  blockSize: BlockSize | null;
  exportDescription: string | null;
}

/** What a layer's per-context callbacks see. */
export interface Call {
  readonly handle: unknown;
  /** The context below (null for the plugin). */
  readonly next: Context | null;
  readonly readonly: boolean;
  /** Known once prepared. */
  readonly caps: Caps | null;
}

export interface OpenRequest {
  readonly: boolean;
  exportName: string;
  tls: boolean;
  connection?: ConnectionInfo;
}

/** How a filter's open reaches the layer below. */
export interface Below {
  next(readonly: boolean, exportName: string): Promise<Context>;
  use(ctx: Context): void;
  lower: LowerBackend;
}

export type DataCall = "pread" | "preadSparse" | "pwrite" | "flush" | "trim" | "zero" | "extents" | "contextExtents" | "cache";

export interface LayerOps {
  readonly name: string;
  readonly kind: "plugin" | "filter";
  /**
   * Data calls this layer does not handle: they go straight to the context
   * below. Read when a context opens (filters may pick their callbacks at
   * config_complete).
   */
  readonly passThrough: ReadonlySet<DataCall>;

  load(): Promise<void>;
  unload(): Promise<void>;
  config(key: string, value: string, next: ((k: string, v: string) => Promise<void>) | null): Promise<void>;
  configComplete(next: (() => Promise<void>) | null): Promise<void>;
  getReady(): Promise<void>;
  afterFork(lower: LowerBackend | null, server: ServerServices): Promise<void>;
  cleanup(): Promise<void>;
  preconnect(next: ((readonly: boolean) => Promise<void>) | null, readonly: boolean, peer: PeerInfo): Promise<void>;
  listExports(lower: LowerBackend | null, p: ListParams): Promise<ExportEntry[]>;
  defaultExport(lower: LowerBackend | null, p: ListParams): Promise<string | null>;
  metaContexts(lower: LowerBackend | null, exportName: string): Promise<string[]>;

  open(r: OpenRequest, below: Below | null): Promise<unknown>;
  prepare(c: Call): Promise<void>;
  finalize(c: Call): Promise<void>;
  close(c: Call): Promise<void>;
  caps(c: Call): Promise<Caps>;

  pread(c: Call, buf: Buffer, offset: number, flags: number): Promise<void>;
  preadSparse(c: Call, buf: Buffer, offset: number, flags: number): Promise<ReadPiece[]>;
  pwrite(c: Call, buf: Buffer, offset: number, flags: number): Promise<void>;
  flush(c: Call, flags: number): Promise<void>;
  trim(c: Call, count: number, offset: number, flags: number): Promise<void>;
  zero(c: Call, count: number, offset: number, flags: number): Promise<void>;
  extents(c: Call, count: number, offset: number, flags: number): Promise<Extent[]>;
  contextExtents(c: Call, context: string, count: number, offset: number, flags: number): Promise<Extent[]>;
  cache(c: Call, count: number, offset: number, flags: number): Promise<void>;
  /** The plugin's DirectMemory for an opened handle (plugins only). */
  memory?(handle: unknown): DirectMemory | null;
}

const ZERO_CHUNK = 1024 * 1024;
let zeroBuf: Buffer | null = null;
function zeros(n: number): Buffer {
  zeroBuf ??= Buffer.alloc(ZERO_CHUNK);
  return n === ZERO_CHUNK ? zeroBuf : zeroBuf.subarray(0, n);
}

const NONE: ReadonlySet<DataCall> = new Set();

// ------------------------------------------------------------------ plugins

export function pluginOps(p: Plugin): LayerOps {
  const name = p.name;
  const fuaEmulated = async (c: Call, flags: number, call: (f: number) => unknown): Promise<void> => {
    if (flags & FLAG_FUA && c.caps!.canFua === "emulate") {
      await call(flags & ~FLAG_FUA);
      if (p.flush) await p.flush(c.handle, 0);
    } else await call(flags);
  };
  const ops: LayerOps = {
    name,
    kind: "plugin",
    passThrough: NONE,
    memory: p.memory ? (h) => p.memory!(h) : undefined,
    async load() {
      await p.load?.();
    },
    async unload() {
      await p.unload?.();
    },
    async config(key, value) {
      if (!p.config) throw new Error(`${name}: this plugin does not take parameters (got '${key}')`);
      await p.config(key, value);
    },
    async configComplete() {
      await p.configComplete?.();
    },
    async getReady() {
      await p.getReady?.();
    },
    async afterFork(_lower, server) {
      await p.afterFork?.(server);
    },
    async cleanup() {
      await p.cleanup?.();
    },
    async preconnect(_next, readonly, peer) {
      await p.preconnect?.(readonly, peer);
    },
    async listExports(_lower, lp) {
      if (p.listExports) return p.listExports(lp);
      // nbdkit: a plugin without list_exports lists its default export, or nothing without one.
      const def = await ops.defaultExport(null, lp);
      return def === null ? [] : [{ name: def }];
    },
    async defaultExport(_lower, lp) {
      return p.defaultExport ? p.defaultExport(lp) : "";
    },
    async metaContexts(_lower, exportName) {
      return p.metaContexts ? p.metaContexts(exportName) : [];
    },
    async open(r) {
      return p.open(r.readonly, r.exportName, r.tls, r.connection);
    },
    async prepare(c) {
      await p.prepare?.(c.handle, c.readonly);
    },
    async finalize(c) {
      await p.finalize?.(c.handle);
    },
    async close(c) {
      await p.close?.(c.handle);
    },
    async caps(c) {
      const h = c.handle;
      const rawSize = await p.getSize(h);
      const size = Number(rawSize);
      if (!Number.isSafeInteger(size) || size < 0) throw new Error(`${name}: get_size returned an invalid size ${String(rawSize)}`);
      // nbdkit's defaults: can_write if there is pwrite; can_trim/zero/fua only when writable.
      const canWrite = !c.readonly && (p.canWrite ? await p.canWrite(h) : !!p.pwrite) && !!p.pwrite;
      const canFlush = p.canFlush ? await p.canFlush(h) : !!p.flush;
      const canTrim = canWrite && (p.canTrim ? await p.canTrim(h) : !!p.trim) && !!p.trim;
      // Zero is emulated with pwrite when the plugin has no zero callback.
      const canZero = canWrite && (p.canZero ? await p.canZero(h) : true);
      // Without a zero callback, emulation fails fast, so fast zero is honest.
      const canFastZero = canZero && (p.canFastZero ? await p.canFastZero(h) : !p.zero);
      const canFua: FuaMode = !canWrite ? "none" : p.canFua ? await p.canFua(h) : canFlush ? "emulate" : "none";
      return {
        size,
        canWrite,
        canFlush,
        isRotational: p.isRotational ? await p.isRotational(h) : false,
        canTrim,
        canZero,
        canFastZero,
        canFua,
        canMultiConn: p.canMultiConn ? await p.canMultiConn(h) : false,
        canExtents: (p.canExtents ? await p.canExtents(h) : !!p.extents) && !!p.extents,
        canCache: p.canCache ? await p.canCache(h) : p.cache ? "native" : "none",
        blockSize: p.blockSize ? await p.blockSize(h) : null,
        exportDescription: p.exportDescription ? await p.exportDescription(h) : null,
      };
    },
    async pread(c, buf, offset, flags) {
      await p.pread(c.handle, buf, offset, flags);
    },
    async preadSparse(c, buf, offset, flags) {
      if (!p.preadSparse) {
        await p.pread(c.handle, buf, offset, flags);
        return [{ length: buf.length, hole: false }];
      }
      return p.preadSparse(c.handle, buf, offset, flags);
    },
    async pwrite(c, buf, offset, flags) {
      await fuaEmulated(c, flags, (f) => p.pwrite!(c.handle, buf, offset, f));
    },
    async flush(c, flags) {
      await p.flush?.(c.handle, flags);
    },
    async trim(c, count, offset, flags) {
      await fuaEmulated(c, flags, (f) => p.trim!(c.handle, count, offset, f));
    },
    async zero(c, count, offset, flags) {
      if (p.zero) {
        try {
          await fuaEmulated(c, flags, (f) => p.zero!(c.handle, count, offset, f));
          return;
        } catch (err) {
          // "not supported" from the plugin means: fall back to writing zeroes (unless asked to be fast).
          if (!(err instanceof NbdError && err.errno === NBD_ENOTSUP) || flags & FLAG_FAST_ZERO) throw err;
        }
      } else if (flags & FLAG_FAST_ZERO) {
        throw new NbdError(NBD_ENOTSUP, "fast zero is not supported");
      }
      const wflags = flags & FLAG_FUA;
      while (count > 0) {
        const n = Math.min(count, ZERO_CHUNK);
        await ops.pwrite(c, zeros(n), offset, count === n ? wflags : 0);
        offset += n;
        count -= n;
      }
    },
    async extents(c, count, offset, flags) {
      return p.extents!(c.handle, count, offset, flags);
    },
    async contextExtents(c, context, count, offset, flags) {
      if (!p.contextExtents) throw new NbdError(NBD_EINVAL, `metadata context ${context} is not served here`);
      return p.contextExtents(c.handle, context, count, offset, flags);
    },
    async cache(c, count, offset, flags) {
      if (c.caps!.canCache === "native" && p.cache) {
        await p.cache(c.handle, count, offset, flags);
        return;
      }
      // Emulated: reading pulls the data into whatever caches exist.
      const scratch = Buffer.allocUnsafe(Math.min(count, ZERO_CHUNK));
      while (count > 0) {
        const n = Math.min(count, scratch.length);
        await p.pread(c.handle, scratch.subarray(0, n), offset, 0);
        offset += n;
        count -= n;
      }
    },
  };
  return ops;
}

/** The errors a layer boundary gives for a request the layer above should not have made. */
export const boundaryError = {
  readonly: () => new NbdError(NBD_EPERM, "write on a read-only export"),
  unsupported: (what: string) => new NbdError(NBD_EINVAL, `${what} is not supported by this export`),
  fastZero: () => new NbdError(NBD_ENOTSUP, "fast zero is not supported"),
};
