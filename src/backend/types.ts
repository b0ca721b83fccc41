// The public plugin and filter API (nbdkit's, in TypeScript).
//
// Every callback may be omitted; the stack supplies nbdkit's documented
// default. Callbacks may return a value or a Promise of it.

export type MaybePromise<T> = T | Promise<T>;

/** Request flags passed to data callbacks (nbdkit's NBDKIT_FLAG_*). */
export const FLAG_MAY_TRIM = 1 << 0; // zero: may punch a hole (no NO_HOLE)
export const FLAG_FUA = 1 << 1; // write, zero, trim: persist before replying
export const FLAG_REQ_ONE = 1 << 2; // extents: one extent is enough
export const FLAG_FAST_ZERO = 1 << 3; // zero: fail with ENOTSUP unless fast

/** canFua / canCache answers, as nbdkit's NBDKIT_FUA_* / NBDKIT_CACHE_*. */
export type FuaMode = "none" | "emulate" | "native";
export type CacheMode = "none" | "emulate" | "native";

/** One extent of base:allocation: a run of bytes with the same state. */
export interface Extent {
  length: number;
  /** NBD_STATE_HOLE (1) | NBD_STATE_ZERO (2), or 0 for allocated data. */
  type: number;
}

export interface BlockSize {
  minimum: number;
  preferred: number;
  maximum: number;
}

export interface ExportEntry {
  name: string;
  description?: string;
}

/** Who is connecting: passed to preconnect (the ip filter decides on it). */
export interface PeerInfo {
  family: "ipv4" | "ipv6" | "unix" | "stdio";
  address?: string;
  port?: number;
  /** Unix sockets on Linux: the peer process's credentials, looked up on demand. */
  credentials?: () => Promise<{ pid: number; uid: number; gid: number } | null>;
}

export interface ListParams {
  readonly: boolean;
  tls: boolean;
}

/**
 * An error carrying the NBD error a client should see. Throw it from any
 * callback; other errors map to EIO (or by their .code, e.g. "ENOSPC").
 */
export class NbdError extends Error {
  constructor(
    public readonly errno: number,
    message: string,
  ) {
    super(message);
    this.name = "NbdError";
  }
}

/** Data and capability calls on one opened context (any layer). */
export interface DataOps {
  getSize(): Promise<number>;
  canWrite(): Promise<boolean>;
  canFlush(): Promise<boolean>;
  isRotational(): Promise<boolean>;
  canTrim(): Promise<boolean>;
  canZero(): Promise<boolean>;
  canFastZero(): Promise<boolean>;
  canFua(): Promise<FuaMode>;
  canMultiConn(): Promise<boolean>;
  canExtents(): Promise<boolean>;
  canCache(): Promise<CacheMode>;
  blockSize(): Promise<BlockSize | null>;
  exportDescription(): Promise<string | null>;

  pread(buf: Buffer, offset: number, flags: number): Promise<void>;
  pwrite(buf: Buffer, offset: number, flags: number): Promise<void>;
  flush(flags: number): Promise<void>;
  trim(count: number, offset: number, flags: number): Promise<void>;
  zero(count: number, offset: number, flags: number): Promise<void>;
  /** Extents covering [offset, ...) contiguously; at least one, at most count bytes matter. */
  extents(count: number, offset: number, flags: number): Promise<Extent[]>;
  cache(count: number, offset: number, flags: number): Promise<void>;
}

/** An opened context into a layer: what a connection or a filter holds. */
export interface Context extends DataOps {
  readonly exportName: string;
  readonly readonly: boolean;
}

/** Options to open a context into a layer (used by filters below afterFork). */
export interface OpenOptions {
  readonly?: boolean;
  exportName?: string;
  tls?: boolean;
  /** Share one refcounted context among all callers with the same key. */
  shared?: boolean;
}

/**
 * The layer below a filter, as a whole: listing and, from afterFork until
 * unload, contexts the filter opens for itself.
 */
export interface LowerBackend {
  readonly name: string;
  listExports(p: ListParams): Promise<ExportEntry[]>;
  defaultExport(p: ListParams): Promise<string | null>;
  open(o: OpenOptions): Promise<Context>;
  close(ctx: Context): Promise<void>;
}

/** Global callbacks shared by plugins and filters. */
interface LayerCommon {
  name: string;
  version?: string;
  longname?: string;
  description?: string;
  /** Text printed by `nbdstate NAME --help` after the generic help. */
  configHelp?: string;
  load?(): MaybePromise<void>;
  unload?(): MaybePromise<void>;
  dumpPlugin?(): string;
  getReady?(): MaybePromise<void>;
  cleanup?(): MaybePromise<void>;
}

// ---------------------------------------------------------------- plugins

export interface Plugin<H = any> extends LayerCommon {
  /** The key a bare VALUE on the command line is given to (e.g. "size"). */
  magicConfigKey?: string;
  config?(key: string, value: string): MaybePromise<void>;
  configComplete?(): MaybePromise<void>;
  afterFork?(): MaybePromise<void>;
  preconnect?(readonly: boolean, peer: PeerInfo): MaybePromise<void>;
  listExports?(p: ListParams): MaybePromise<ExportEntry[]>;
  defaultExport?(p: ListParams): MaybePromise<string | null>;

  open(readonly: boolean, exportName: string, tls: boolean): MaybePromise<H>;
  prepare?(h: H, readonly: boolean): MaybePromise<void>;
  finalize?(h: H): MaybePromise<void>;
  close?(h: H): MaybePromise<void>;

  getSize(h: H): MaybePromise<number | bigint>;
  canWrite?(h: H): MaybePromise<boolean>;
  canFlush?(h: H): MaybePromise<boolean>;
  isRotational?(h: H): MaybePromise<boolean>;
  canTrim?(h: H): MaybePromise<boolean>;
  canZero?(h: H): MaybePromise<boolean>;
  canFastZero?(h: H): MaybePromise<boolean>;
  canFua?(h: H): MaybePromise<FuaMode>;
  canMultiConn?(h: H): MaybePromise<boolean>;
  canExtents?(h: H): MaybePromise<boolean>;
  canCache?(h: H): MaybePromise<CacheMode>;
  blockSize?(h: H): MaybePromise<BlockSize | null>;
  exportDescription?(h: H): MaybePromise<string | null>;

  pread(h: H, buf: Buffer, offset: number, flags: number): MaybePromise<void>;
  pwrite?(h: H, buf: Buffer, offset: number, flags: number): MaybePromise<void>;
  flush?(h: H, flags: number): MaybePromise<void>;
  trim?(h: H, count: number, offset: number, flags: number): MaybePromise<void>;
  zero?(h: H, count: number, offset: number, flags: number): MaybePromise<void>;
  extents?(h: H, count: number, offset: number, flags: number): MaybePromise<Extent[]>;
  cache?(h: H, count: number, offset: number, flags: number): MaybePromise<void>;
}

// ---------------------------------------------------------------- filters

/** Arguments to a filter's open. */
export interface FilterOpenArgs {
  readonly: boolean;
  exportName: string;
  tls: boolean;
  /**
   * Open the default pass-through context below (what nbdkit's `next` does).
   * If the filter's open never calls next() nor use(), the stack calls
   * next(readonly, exportName) for it after open returns.
   */
  next(readonly?: boolean, exportName?: string): Promise<Context>;
  /** Bind a context the filter opened itself (e.g. a shared one) instead. */
  use(ctx: Context): void;
  /** The layer below, for listing and filter-owned contexts. */
  lower: LowerBackend;
}

export interface Filter<H = any> extends LayerCommon {
  /** Return nothing to pass (key, value) on, or call next yourself. */
  config?(next: (key: string, value: string) => Promise<void>, key: string, value: string): MaybePromise<void>;
  configComplete?(next: () => Promise<void>): MaybePromise<void>;
  /** The layer below is usable from here on, until unload. */
  afterFork?(lower: LowerBackend): MaybePromise<void>;
  /** Right after accept, before the handshake: throw to refuse the client. */
  preconnect?(next: (readonly: boolean) => Promise<void>, readonly: boolean, peer: PeerInfo): MaybePromise<void>;
  listExports?(lower: LowerBackend, p: ListParams): MaybePromise<ExportEntry[]>;
  defaultExport?(lower: LowerBackend, p: ListParams): MaybePromise<string | null>;

  open?(a: FilterOpenArgs): MaybePromise<H>;
  prepare?(next: Context, h: H, readonly: boolean): MaybePromise<void>;
  finalize?(next: Context, h: H): MaybePromise<void>;
  close?(h: H): MaybePromise<void>;

  getSize?(next: Context, h: H): MaybePromise<number | bigint>;
  canWrite?(next: Context, h: H): MaybePromise<boolean>;
  canFlush?(next: Context, h: H): MaybePromise<boolean>;
  isRotational?(next: Context, h: H): MaybePromise<boolean>;
  canTrim?(next: Context, h: H): MaybePromise<boolean>;
  canZero?(next: Context, h: H): MaybePromise<boolean>;
  canFastZero?(next: Context, h: H): MaybePromise<boolean>;
  canFua?(next: Context, h: H): MaybePromise<FuaMode>;
  canMultiConn?(next: Context, h: H): MaybePromise<boolean>;
  canExtents?(next: Context, h: H): MaybePromise<boolean>;
  canCache?(next: Context, h: H): MaybePromise<CacheMode>;
  blockSize?(next: Context, h: H): MaybePromise<BlockSize | null>;
  exportDescription?(next: Context, h: H): MaybePromise<string | null>;

  pread?(next: Context, h: H, buf: Buffer, offset: number, flags: number): MaybePromise<void>;
  pwrite?(next: Context, h: H, buf: Buffer, offset: number, flags: number): MaybePromise<void>;
  flush?(next: Context, h: H, flags: number): MaybePromise<void>;
  trim?(next: Context, h: H, count: number, offset: number, flags: number): MaybePromise<void>;
  zero?(next: Context, h: H, count: number, offset: number, flags: number): MaybePromise<void>;
  extents?(next: Context, h: H, count: number, offset: number, flags: number): MaybePromise<Extent[]>;
  cache?(next: Context, h: H, count: number, offset: number, flags: number): MaybePromise<void>;
}

/** What a plugin or filter module exports: `export default` one of these. */
export type PluginModule = { default: Plugin } | Plugin;
export type FilterModule = { default: Filter } | Filter;
