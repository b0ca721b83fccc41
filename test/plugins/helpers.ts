// Test helpers: drive plugins and filters directly through their API,
// without src/backend/stack.ts. Only the few nbdkit defaults the tests need
// are supplied here.

import type {
  Plugin, Filter, Context, LowerBackend, ListParams, OpenOptions, ExportEntry,
} from "../../src/backend/types.js";

const P: ListParams = { readonly: false, tls: false };

/** Configure a plugin with key=value pairs and run configComplete. */
export async function configure(p: Plugin, params: Record<string, string | string[]> = {}): Promise<void> {
  for (const [k, v] of Object.entries(params)) {
    for (const one of Array.isArray(v) ? v : [v]) await p.config!(k, one);
  }
  await p.configComplete?.();
}

/** Wrap an opened plugin handle as a Context (what a filter's `next` is). */
export function pluginContext<H>(p: Plugin<H>, h: H, readonly = false, exportName = ""): Context {
  const call = async <T>(f: ((h: H) => T | Promise<T>) | undefined, def: T): Promise<T> =>
    f ? await f.call(p, h) : def;
  return {
    exportName,
    readonly,
    getSize: async () => Number(await p.getSize(h)),
    canWrite: () => call(p.canWrite, !!p.pwrite).then((w) => w && !readonly),
    canFlush: () => call(p.canFlush, !!p.flush),
    isRotational: () => call(p.isRotational, false),
    canTrim: () => call(p.canTrim, !!p.trim),
    canZero: () => call(p.canZero, true),
    canFastZero: () => call(p.canFastZero, false),
    canFua: () => call(p.canFua, p.flush ? ("emulate" as const) : ("none" as const)),
    canMultiConn: () => call(p.canMultiConn, false),
    canExtents: () => call(p.canExtents, !!p.extents),
    canCache: () => call(p.canCache, "none" as const),
    blockSize: () => call(p.blockSize, null),
    exportDescription: () => call(p.exportDescription, null),
    pread: async (buf, off, fl) => p.pread(h, buf, off, fl),
    pwrite: async (buf, off, fl) => p.pwrite!(h, buf, off, fl),
    flush: async (fl) => p.flush?.(h, fl),
    trim: async (c, off, fl) => p.trim!(h, c, off, fl),
    zero: async (c, off, fl) => p.zero!(h, c, off, fl),
    extents: async (c, off, fl) => (p.extents ? p.extents(h, c, off, fl) : [{ length: c, type: 0 }]),
    cache: async (c, off, fl) => p.cache?.(h, c, off, fl),
  };
}

/** Open (and prepare) a plugin; returns the handle and its Context. */
export async function openPlugin<H>(p: Plugin<H>, readonly = false, exportName = "") {
  const h = await p.open(readonly, exportName, false);
  await p.prepare?.(h, readonly);
  return { h, ctx: pluginContext(p, h, readonly, exportName) };
}

/** The plugin seen as the layer below a filter. */
export function lowerOf(p: Plugin): LowerBackend & { opened: string[] } {
  const opened: string[] = [];
  const handles = new Map<Context, unknown>();
  return {
    name: p.name,
    opened,
    async listExports(lp): Promise<ExportEntry[]> {
      if (p.listExports) return p.listExports(lp);
      return [{ name: (await this.defaultExport(lp)) ?? "" }];
    },
    async defaultExport(lp) {
      return p.defaultExport ? p.defaultExport(lp) : "";
    },
    async open(o: OpenOptions) {
      const name = o.exportName ?? "";
      opened.push(name);
      const { h, ctx } = await openPlugin(p, o.readonly ?? false, name);
      handles.set(ctx, h);
      return ctx;
    },
    async close(ctx) {
      await p.close?.(handles.get(ctx));
      handles.delete(ctx);
    },
  };
}

/** Configure a filter over a plugin: filter keys go to the filter, others pass down. */
export async function configureFilter(
  f: Filter, p: Plugin, params: [string, string][],
): Promise<void> {
  const toPlugin = async (k: string, v: string) => {
    await p.config!(k, v);
  };
  for (const [k, v] of params) {
    if (f.config) await f.config(toPlugin, k, v);
    else await toPlugin(k, v);
  }
  await (f.configComplete ? f.configComplete(async () => { await p.configComplete?.(); }) : p.configComplete?.());
}

/**
 * Open a filter over a plugin the way the stack would: filter.open (calling
 * next or not), then prepare. Returns the filter handle and `next`.
 */
export async function openFilter<H>(
  f: Filter<H>, p: Plugin, readonly = false, exportName = "", lower = lowerOf(p),
) {
  let next: Context | undefined;
  const h = (await f.open?.({
    readonly,
    exportName,
    tls: false,
    lower,
    next: async (ro = readonly, name = exportName) => {
      next = await lower.open({ readonly: ro, exportName: name });
      return next;
    },
    use: (ctx) => {
      next = ctx;
    },
  })) as H;
  next ??= await lower.open({ readonly, exportName });
  await f.prepare?.(next, h, readonly);
  return { h, next, lower };
}

export const LIST: ListParams = P;
