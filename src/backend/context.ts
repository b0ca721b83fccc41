// One layer's opened context as the layer above (or the connection) sees
// it. Every request is checked here once, at the boundary, as nbdkit's
// backend.c does: the range against the size, the flags against what the
// context can do. So no plugin or filter checks ranges again, and a filter
// that computes a bad offset gets a clear error instead of reaching the
// plugin.
//
// A filter layer without a data callback hands that call straight to the
// context below (bound once here): a filter that does nothing with a
// request costs one function call, no check, no await.

import { NBD_EINVAL, NBD_ENOSPC } from "../protocol/constants.js";
import type { Call, Caps, DataCall, LayerOps } from "./layer-ops.js";
import { boundaryError } from "./layer-ops.js";
import {
  FLAG_FAST_ZERO, FLAG_FUA, FLAG_MAY_TRIM, FLAG_REQ_ONE, NbdError,
  type BlockSize, type CacheMode, type Context, type DirectMemory, type Extent, type FuaMode, type ReadPiece,
} from "./types.js";

const ZERO_FLAGS = FLAG_FUA | FLAG_MAY_TRIM | FLAG_FAST_ZERO;

function outOfRange(write: boolean, count: number, offset: number, size: number): NbdError {
  const what = `${count} bytes at offset ${offset}`;
  // As the protocol layer: writing data or zeroes past the end is "no space".
  return write
    ? new NbdError(NBD_ENOSPC, `write of ${what} beyond the end of the export (size ${size})`)
    : new NbdError(NBD_EINVAL, `request of ${what} beyond the end of the export (size ${size})`);
}
function badFlags(what: string, flags: number): NbdError {
  return new NbdError(NBD_EINVAL, `${what}: flags 0x${flags.toString(16)} not allowed`);
}

/** Pieces must cover the read exactly, in order: a layer bug is an error, not a short reply. */
export function checkPieces(who: string, pieces: ReadPiece[], length: number): ReadPiece[] {
  let total = 0;
  for (const p of pieces) {
    if (!(p.length > 0) || !Number.isSafeInteger(p.length)) throw new Error(`${who}: preadSparse returned a piece of length ${p.length}`);
    total += p.length;
  }
  if (total !== length) throw new Error(`${who}: preadSparse pieces cover ${total} bytes of a ${length}-byte read`);
  return pieces;
}

export class BackendContext implements Context, Call {
  caps: Caps | null = null;
  private capsLoading: Promise<Caps> | null = null;

  pread: Context["pread"];
  preadSparse: Context["preadSparse"];
  pwrite: Context["pwrite"];
  flush: Context["flush"];
  trim: Context["trim"];
  zero: Context["zero"];
  extents: Context["extents"];
  contextExtents: Context["contextExtents"];
  cache: Context["cache"];
  /** DirectMemory of the plugin below, when this layer and every one between pass reads and writes through. */
  readonly memory: DirectMemory | null;

  constructor(
    readonly ops: LayerOps,
    readonly handle: unknown,
    /** The context below (null for the plugin). */
    readonly next: Context | null,
    readonly exportName: string,
    readonly readonly: boolean,
  ) {
    const n = next;
    const pass = ops.passThrough;
    const passed = (d: DataCall) => n !== null && pass.has(d);
    this.pread = passed("pread") ? n!.pread.bind(n) : this.checkedPread;
    this.preadSparse = passed("preadSparse") ? n!.preadSparse.bind(n) : this.checkedPreadSparse;
    this.pwrite = passed("pwrite") ? n!.pwrite.bind(n) : this.checkedPwrite;
    this.flush = passed("flush") ? n!.flush.bind(n) : this.checkedFlush;
    this.trim = passed("trim") ? n!.trim.bind(n) : this.checkedTrim;
    this.zero = passed("zero") ? n!.zero.bind(n) : this.checkedZero;
    this.extents = passed("extents") ? n!.extents.bind(n) : this.checkedExtents;
    this.contextExtents = passed("contextExtents") ? n!.contextExtents.bind(n) : this.checkedContextExtents;
    this.cache = passed("cache") ? n!.cache.bind(n) : this.checkedCache;
    // A layer that sees reads or writes must see every one: only a layer
    // that passes all data through hands the storage up.
    const through = passed("pread") && passed("preadSparse") && passed("pwrite");
    this.memory = n === null ? (ops.memory?.(handle) ?? null) : through ? (n.memory ?? null) : null;
  }

  get name(): string {
    return this.ops.name;
  }

  /** Ask the layer for every capability (once; after prepare every data call relies on them). */
  loadCaps(): Promise<Caps> {
    if (this.caps) return Promise.resolve(this.caps);
    this.capsLoading ??= this.ops.caps(this).then((c) => (this.caps = c));
    return this.capsLoading;
  }

  private c(): Caps {
    const c = this.caps;
    if (!c) throw new Error(`${this.ops.name}: context used before it was prepared`);
    return c;
  }

  private range(count: number, offset: number, write: boolean): void {
    const size = this.c().size;
    if (offset < 0 || count < 0 || offset > size || count > size - offset) throw outOfRange(write, count, offset, size);
  }

  async getSize() { return (await this.loadCaps()).size; }
  async canWrite() { return (await this.loadCaps()).canWrite; }
  async canFlush() { return (await this.loadCaps()).canFlush; }
  async isRotational() { return (await this.loadCaps()).isRotational; }
  async canTrim() { return (await this.loadCaps()).canTrim; }
  async canZero() { return (await this.loadCaps()).canZero; }
  async canFastZero() { return (await this.loadCaps()).canFastZero; }
  async canFua(): Promise<FuaMode> { return (await this.loadCaps()).canFua; }
  async canMultiConn() { return (await this.loadCaps()).canMultiConn; }
  async canExtents() { return (await this.loadCaps()).canExtents; }
  async canCache(): Promise<CacheMode> { return (await this.loadCaps()).canCache; }
  async blockSize(): Promise<BlockSize | null> { return (await this.loadCaps()).blockSize; }
  async exportDescription(): Promise<string | null> { return (await this.loadCaps()).exportDescription; }

  private checkedPread = async (buf: Buffer, offset: number, flags: number): Promise<void> => {
    this.range(buf.length, offset, false);
    if (flags !== 0) throw badFlags("pread", flags);
    await this.ops.pread(this, buf, offset, flags);
  };

  private checkedPreadSparse = async (buf: Buffer, offset: number, flags: number): Promise<ReadPiece[]> => {
    this.range(buf.length, offset, false);
    if (flags !== 0) throw badFlags("pread", flags);
    return checkPieces(this.ops.name, await this.ops.preadSparse(this, buf, offset, flags), buf.length);
  };

  private checkedPwrite = async (buf: Buffer, offset: number, flags: number): Promise<void> => {
    const c = this.c();
    if (!c.canWrite) throw boundaryError.readonly();
    this.range(buf.length, offset, true);
    if (flags & ~FLAG_FUA) throw badFlags("pwrite", flags);
    if (flags & FLAG_FUA && c.canFua === "none") throw boundaryError.unsupported("FUA");
    await this.ops.pwrite(this, buf, offset, flags);
  };

  private checkedFlush = async (flags: number): Promise<void> => {
    if (!this.c().canFlush) throw boundaryError.unsupported("flush");
    if (flags !== 0) throw badFlags("flush", flags);
    await this.ops.flush(this, flags);
  };

  private checkedTrim = async (count: number, offset: number, flags: number): Promise<void> => {
    const c = this.c();
    if (!c.canWrite) throw boundaryError.readonly();
    if (!c.canTrim) throw boundaryError.unsupported("trim");
    this.range(count, offset, false);
    if (flags & ~FLAG_FUA) throw badFlags("trim", flags);
    if (flags & FLAG_FUA && c.canFua === "none") throw boundaryError.unsupported("FUA");
    await this.ops.trim(this, count, offset, flags);
  };

  private checkedZero = async (count: number, offset: number, flags: number): Promise<void> => {
    const c = this.c();
    if (!c.canWrite) throw boundaryError.readonly();
    if (!c.canZero) throw boundaryError.unsupported("write zeroes");
    this.range(count, offset, true);
    if (flags & ~ZERO_FLAGS) throw badFlags("zero", flags);
    if (flags & FLAG_FUA && c.canFua === "none") throw boundaryError.unsupported("FUA");
    if (flags & FLAG_FAST_ZERO && !c.canFastZero) throw boundaryError.fastZero();
    await this.ops.zero(this, count, offset, flags);
  };

  private checkedExtents = async (count: number, offset: number, flags: number): Promise<Extent[]> => {
    const c = this.c();
    this.range(count, offset, false);
    if (flags & ~FLAG_REQ_ONE) throw badFlags("extents", flags);
    // nbdkit: a context that cannot say is all data.
    if (!c.canExtents) return [{ length: count, type: 0 }];
    const ext = await this.ops.extents(this, count, offset, flags);
    if (!Array.isArray(ext) || ext.length === 0) throw new Error(`${this.ops.name}: extents returned no extent`);
    return ext;
  };

  private checkedContextExtents = async (context: string, count: number, offset: number, flags: number): Promise<Extent[]> => {
    this.range(count, offset, false);
    if (flags & ~FLAG_REQ_ONE) throw badFlags("extents", flags);
    const ext = await this.ops.contextExtents(this, context, count, offset, flags);
    if (!Array.isArray(ext) || ext.length === 0) throw new Error(`${this.ops.name}: ${context}: no extent returned`);
    return ext;
  };

  private checkedCache = async (count: number, offset: number, flags: number): Promise<void> => {
    if (this.c().canCache === "none") throw new NbdError(NBD_EINVAL, "cache is not supported by this export");
    this.range(count, offset, false);
    if (flags !== 0) throw badFlags("cache", flags);
    await this.ops.cache(this, count, offset, flags);
  };
}
