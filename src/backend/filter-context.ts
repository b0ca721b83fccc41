// A context opened on a filter: calls the filter's callback with `next`
// (the context below), or passes straight through when it has none.
//
// Pass-through methods are bound once at open, so a request through a
// filter that does not care costs one extra call, nothing more.

import { checkPieces } from "./plugin-context.js";
import type { BlockSize, CacheMode, Context, Filter, FuaMode } from "./types.js";

type CapName =
  | "getSize" | "canWrite" | "canFlush" | "isRotational" | "canTrim" | "canZero" | "canFastZero"
  | "canFua" | "canMultiConn" | "canExtents" | "canCache" | "blockSize" | "exportDescription";

export class FilterContext<H = unknown> implements Context {
  private memo = new Map<CapName, Promise<unknown>>();

  pread: Context["pread"];
  preadSparse: Context["preadSparse"];
  pwrite: Context["pwrite"];
  flush: Context["flush"];
  trim: Context["trim"];
  zero: Context["zero"];
  extents: Context["extents"];
  cache: Context["cache"];

  constructor(
    readonly filter: Filter<H>,
    readonly handle: H,
    readonly next: Context,
    readonly exportName: string,
    readonly readonly: boolean,
  ) {
    const f = filter;
    const n = next;
    this.pread = f.pread ? async (b, o, fl) => { await f.pread!(n, handle, b, o, fl); } : n.pread.bind(n);
    this.preadSparse = f.preadSparse
      ? async (b, o, fl) => checkPieces(f.name, await f.preadSparse!(n, handle, b, o, fl), b.length)
      : f.pread
        ? async (b, o, fl) => {
            await f.pread!(n, handle, b, o, fl);
            return [{ length: b.length, hole: false }];
          }
        : n.preadSparse.bind(n);
    this.pwrite = f.pwrite ? async (b, o, fl) => { await f.pwrite!(n, handle, b, o, fl); } : n.pwrite.bind(n);
    this.flush = f.flush ? async (fl) => { await f.flush!(n, handle, fl); } : n.flush.bind(n);
    this.trim = f.trim ? async (c, o, fl) => { await f.trim!(n, handle, c, o, fl); } : n.trim.bind(n);
    this.zero = f.zero ? async (c, o, fl) => { await f.zero!(n, handle, c, o, fl); } : n.zero.bind(n);
    this.extents = f.extents ? async (c, o, fl) => await f.extents!(n, handle, c, o, fl) : n.extents.bind(n);
    this.cache = f.cache ? async (c, o, fl) => { await f.cache!(n, handle, c, o, fl); } : n.cache.bind(n);
  }

  /** A capability answered by the filter if it has the callback, else by the layer below; asked once. */
  private cap<T>(name: CapName): Promise<T> {
    let p = this.memo.get(name);
    if (!p) {
      const fn = this.filter[name] as ((next: Context, h: H) => unknown) | undefined;
      p = fn ? Promise.resolve(fn.call(this.filter, this.next, this.handle)) : (this.next[name] as () => Promise<unknown>).call(this.next);
      this.memo.set(name, p);
    }
    return p as Promise<T>;
  }

  async getSize(): Promise<number> {
    const s = Number(await this.cap<number | bigint>("getSize"));
    if (!Number.isSafeInteger(s) || s < 0) throw new Error(`${this.filter.name}: get_size returned an invalid size`);
    return s;
  }
  async canWrite() { return !this.readonly && (await this.cap<boolean>("canWrite")); }
  canFlush() { return this.cap<boolean>("canFlush"); }
  isRotational() { return this.cap<boolean>("isRotational"); }
  async canTrim() { return (await this.canWrite()) && (await this.cap<boolean>("canTrim")); }
  async canZero() { return (await this.canWrite()) && (await this.cap<boolean>("canZero")); }
  async canFastZero() { return (await this.canZero()) && (await this.cap<boolean>("canFastZero")); }
  async canFua(): Promise<FuaMode> { return (await this.canWrite()) ? this.cap<FuaMode>("canFua") : "none"; }
  canMultiConn() { return this.cap<boolean>("canMultiConn"); }
  canExtents() { return this.cap<boolean>("canExtents"); }
  canCache() { return this.cap<CacheMode>("canCache"); }
  blockSize() { return this.cap<BlockSize | null>("blockSize"); }
  exportDescription() { return this.cap<string | null>("exportDescription"); }
}

