// filterOps(): a Filter adapted to LayerOps (layer-ops.ts), with nbdkit's
// default for every omitted callback: pass the call to the layer below.

import type { BlockSize, CacheMode, Context, Filter, FuaMode } from "./types.js";
import type { Call, Caps, DataCall, LayerOps } from "./layer-ops.js";

type CapName = Exclude<keyof Caps, "size">;
const CAP_NAMES: CapName[] = [
  "canWrite", "canFlush", "isRotational", "canTrim", "canZero", "canFastZero", "canFua", "canMultiConn",
  "canExtents", "canCache", "blockSize", "exportDescription",
];

export function filterOps(f: Filter): LayerOps {
  const name = f.name;
  const passThrough = (): Set<DataCall> => {
    const pass = new Set<DataCall>();
    for (const d of ["pwrite", "flush", "trim", "zero", "extents", "contextExtents", "cache"] as const) if (!f[d]) pass.add(d);
    // A filter that reads for itself serves plain data unless it also says where the holes are.
    if (!f.pread) pass.add("pread");
    if (!f.pread && !f.preadSparse) pass.add("preadSparse");
    return pass;
  };
  const nx = (c: Call) => c.next!;
  const ops: LayerOps = {
    name,
    kind: "filter",
    get passThrough() {
      return passThrough();
    },
    async load() {
      await f.load?.();
    },
    async unload() {
      await f.unload?.();
    },
    async config(key, value, next) {
      if (f.config) await f.config(next!, key, value);
      else await next!(key, value);
    },
    async configComplete(next) {
      if (f.configComplete) await f.configComplete(next!);
      else await next!();
    },
    async getReady() {
      await f.getReady?.();
    },
    async afterFork(lower, server) {
      await f.afterFork?.(lower!, server);
    },
    async cleanup() {
      await f.cleanup?.();
    },
    async preconnect(next, readonly, peer) {
      if (f.preconnect) await f.preconnect(next!, readonly, peer);
      else await next!(readonly);
    },
    async listExports(lower, lp) {
      return f.listExports ? f.listExports(lower!, lp) : lower!.listExports(lp);
    },
    async defaultExport(lower, lp) {
      return f.defaultExport ? f.defaultExport(lower!, lp) : lower!.defaultExport(lp);
    },
    async metaContexts(lower, exportName) {
      return f.metaContexts ? f.metaContexts(lower!, exportName) : lower!.metaContexts(exportName);
    },
    async open(r, below) {
      const b = below!;
      return f.open
        ? f.open({
            readonly: r.readonly, exportName: r.exportName, tls: r.tls, connection: r.connection, lower: b.lower,
            next: (ro = r.readonly, n = r.exportName) => b.next(ro, n),
            use: (ctx) => b.use(ctx),
          })
        : undefined;
    },
    async prepare(c) {
      await f.prepare?.(nx(c), c.handle, c.readonly);
    },
    async finalize(c) {
      await f.finalize?.(nx(c), c.handle);
    },
    async close(c) {
      await f.close?.(c.handle);
    },
    async caps(c) {
      const next = nx(c);
      const ask = async <T>(n: CapName | "getSize"): Promise<T> => {
        const fn = f[n] as ((next: Context, h: unknown) => unknown) | undefined;
        return (fn ? await fn.call(f, next, c.handle) : await (next[n] as () => Promise<unknown>).call(next)) as T;
      };
      const rawSize = await ask<number | bigint>("getSize");
      const size = Number(rawSize);
      if (!Number.isSafeInteger(size) || size < 0) throw new Error(`${name}: get_size returned an invalid size ${String(rawSize)}`);
      const v = {} as Record<CapName, unknown>;
      for (const n of CAP_NAMES) v[n] = await ask(n);
      // A read-only context cannot trim, zero or take FUA, whatever is below.
      const canWrite = !c.readonly && (v.canWrite as boolean);
      const canZero = canWrite && (v.canZero as boolean);
      return {
        size,
        canWrite,
        canFlush: v.canFlush as boolean,
        isRotational: v.isRotational as boolean,
        canTrim: canWrite && (v.canTrim as boolean),
        canZero,
        canFastZero: canZero && (v.canFastZero as boolean),
        canFua: canWrite ? (v.canFua as FuaMode) : "none",
        canMultiConn: v.canMultiConn as boolean,
        canExtents: v.canExtents as boolean,
        canCache: v.canCache as CacheMode,
        blockSize: v.blockSize as BlockSize | null,
        exportDescription: v.exportDescription as string | null,
      };
    },
    async pread(c, buf, offset, flags) {
      await f.pread!(nx(c), c.handle, buf, offset, flags);
    },
    async preadSparse(c, buf, offset, flags) {
      if (f.preadSparse) return f.preadSparse(nx(c), c.handle, buf, offset, flags);
      await f.pread!(nx(c), c.handle, buf, offset, flags);
      return [{ length: buf.length, hole: false }];
    },
    async pwrite(c, buf, offset, flags) {
      await f.pwrite!(nx(c), c.handle, buf, offset, flags);
    },
    async flush(c, flags) {
      await f.flush!(nx(c), c.handle, flags);
    },
    async trim(c, count, offset, flags) {
      await f.trim!(nx(c), c.handle, count, offset, flags);
    },
    async zero(c, count, offset, flags) {
      await f.zero!(nx(c), c.handle, count, offset, flags);
    },
    async extents(c, count, offset, flags) {
      return f.extents!(nx(c), c.handle, count, offset, flags);
    },
    async contextExtents(c, context, count, offset, flags) {
      return f.contextExtents!(nx(c), c.handle, context, count, offset, flags);
    },
    async cache(c, count, offset, flags) {
      await f.cache!(nx(c), c.handle, count, offset, flags);
    },
  };
  return ops;
}

