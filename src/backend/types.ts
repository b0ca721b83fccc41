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

/**
 * One piece of a sparse read, in order from the read's offset: `length`
 * bytes that are data (written into the buffer) or a hole (they read as
 * zeros; the buffer there may be left unwritten).
 */
export interface ReadPiece {
  length: number;
  hole: boolean;
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

/**
 * What the server offers every layer (nbdkit_shutdown, nbdkit_error,
 * nbdkit_debug): given to afterFork, valid until unload.
 */
export interface ServerServices {
  /** Ask the server to shut down gracefully, as a signal would (nbdkit_shutdown). */
  shutdown(reason?: string): void;
  /** One line on the server's log (stderr, or --log=syslog), always shown. */
  log(message: string): void;
  /** One line shown only with -v (nbdkit_debug). */
  debug(message: string): void;
}

/**
 * The client a context is opened for. Absent when a filter opens a context
 * of its own (afterFork..unload), which belongs to no connection.
 */
export interface ConnectionInfo {
  /** The connection's id, as in log lines and on the status page ("conn-3"). */
  readonly id: string;
  readonly peer: PeerInfo;
  /** True once TLS is up on this connection. */
  readonly tls: boolean;
  /** Date.now() when the connection was accepted. */
  readonly acceptedAt: number;
  /**
   * Close this connection (nbdkit_disconnect): force drops it at once;
   * otherwise new requests are refused and it closes once the replies
   * owed have been sent.
   */
  disconnect(force: boolean): void;
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
  /**
   * Read as data and hole pieces covering buf (a structured READ sends
   * holes as NBD_REPLY_TYPE_OFFSET_HOLE). Hole bytes of buf are unspecified.
   */
  preadSparse(buf: Buffer, offset: number, flags: number): Promise<ReadPiece[]>;
  pwrite(buf: Buffer, offset: number, flags: number): Promise<void>;
  flush(flags: number): Promise<void>;
  trim(count: number, offset: number, flags: number): Promise<void>;
  zero(count: number, offset: number, flags: number): Promise<void>;
  /** Extents covering [offset, ...) contiguously; at least one, at most count bytes matter. */
  extents(count: number, offset: number, flags: number): Promise<Extent[]>;
  /** Block status of a metadata context other than base:allocation (see metaContexts). */
  contextExtents(context: string, count: number, offset: number, flags: number): Promise<Extent[]>;
  cache(count: number, offset: number, flags: number): Promise<void>;
}

/**
 * Storage that lives in this process's memory, reached without a copy: a
 * READ's reply is written from views of the storage itself, a WRITE's
 * payload is read from the socket straight into it. Offered by a plugin
 * (memory) and handed up by every filter layer that passes reads and
 * writes through; a context that has it still serves every call as usual.
 * Ranges given are already checked (in the export, not empty).
 */
export interface DirectMemory {
  /**
   * The bytes of [offset, offset + count) in order, appended to out: a
   * Buffer is data (a view of the storage itself), a number that many bytes
   * of hole (zeros). Call release() once nothing reads the views any more.
   */
  view(count: number, offset: number, out: (Buffer | number)[]): void;
  /**
   * The storage of [offset, offset + count) allocated, as buffers in order,
   * appended to out: what is written into them is the disk's contents.
   * Call release() once the last byte is in. Absent when the context is
   * read-only.
   */
  target?(count: number, offset: number, out: Buffer[]): void;
  /** One view() or target() is done with: until every one is, freed storage is not reused. */
  release(): void;
  /** Optional: the payload of a target() is all in (before its release()). */
  written?(count: number, offset: number): void;
}

/**
 * A plugin whose connections can be served from transmission worker
 * threads (src/threads): each worker runs its own instance of the plugin,
 * configured with the same parameters, that shares this one's data.
 */
export interface PluginThreads {
  /**
   * Called once in the main thread after afterFork, before any client:
   * what a worker's instance needs to reach the same data (structured-
   * clonable), or null when this configuration cannot be shared (then
   * every connection is served here).
   */
  share(): unknown;
  /** Called on a worker's instance after its getReady, with share()'s value. */
  join(state: unknown): void;
}

/** An opened context into a layer: what a connection or a filter holds. */
export interface Context extends DataOps {
  readonly exportName: string;
  readonly readonly: boolean;
  /** Zero-copy access to the storage, when every layer down to it passes data through (DirectMemory). */
  readonly memory?: DirectMemory | null;
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
  /** Metadata contexts the layer below serves for an export, besides base:allocation. */
  metaContexts(exportName: string): Promise<string[]>;
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
  afterFork?(server: ServerServices): MaybePromise<void>;
  preconnect?(readonly: boolean, peer: PeerInfo): MaybePromise<void>;
  listExports?(p: ListParams): MaybePromise<ExportEntry[]>;
  defaultExport?(p: ListParams): MaybePromise<string | null>;

  /**
   * Requests reach the data callbacks already checked (offset + count
   * within getSize, flags the export advertised): plugins need not check
   * ranges again.
   */
  open(readonly: boolean, exportName: string, tls: boolean, connection?: ConnectionInfo): MaybePromise<H>;
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
  /**
   * Optional: read and say which parts are holes (ReadPiece), leaving hole
   * bytes of buf unwritten. Without it every read is plain data.
   */
  preadSparse?(h: H, buf: Buffer, offset: number, flags: number): MaybePromise<ReadPiece[]>;
  pwrite?(h: H, buf: Buffer, offset: number, flags: number): MaybePromise<void>;
  /**
   * Optional: the storage as DirectMemory (it must hold the same bytes
   * pread and pwrite see). The server then reads and writes data through
   * it when no filter handles data; flush, trim and the rest still come here:
   * a plugin built by spreading another's methods and replacing pread or
   * pwrite must leave memory out, or its reads never reach its pread.
   */
  memory?(h: H): DirectMemory | null;
  /** Optional: this plugin can be served from worker threads (PluginThreads). */
  threads?: PluginThreads;
  flush?(h: H, flags: number): MaybePromise<void>;
  trim?(h: H, count: number, offset: number, flags: number): MaybePromise<void>;
  zero?(h: H, count: number, offset: number, flags: number): MaybePromise<void>;
  extents?(h: H, count: number, offset: number, flags: number): MaybePromise<Extent[]>;
  cache?(h: H, count: number, offset: number, flags: number): MaybePromise<void>;
  /**
   * Metadata contexts besides base:allocation (e.g. "qemu:allocation-depth")
   * this plugin serves for an export; clients select them with
   * NBD_OPT_SET_META_CONTEXT and read them with contextExtents.
   */
  metaContexts?(exportName: string): MaybePromise<string[]>;
  contextExtents?(h: H, context: string, count: number, offset: number, flags: number): MaybePromise<Extent[]>;
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
  /** The client this context is for (absent for a context a filter opened itself). */
  connection?: ConnectionInfo;
}

export interface Filter<H = any> extends LayerCommon {
  /** Return nothing to pass (key, value) on, or call next yourself. */
  config?(next: (key: string, value: string) => Promise<void>, key: string, value: string): MaybePromise<void>;
  configComplete?(next: () => Promise<void>): MaybePromise<void>;
  /** The layer below is usable from here on, until unload. */
  afterFork?(lower: LowerBackend, server: ServerServices): MaybePromise<void>;
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
  /**
   * Optional. A filter without pread passes sparse reads through; one with
   * pread but without preadSparse serves its reads as plain data.
   */
  preadSparse?(next: Context, h: H, buf: Buffer, offset: number, flags: number): MaybePromise<ReadPiece[]>;
  pwrite?(next: Context, h: H, buf: Buffer, offset: number, flags: number): MaybePromise<void>;
  flush?(next: Context, h: H, flags: number): MaybePromise<void>;
  trim?(next: Context, h: H, count: number, offset: number, flags: number): MaybePromise<void>;
  zero?(next: Context, h: H, count: number, offset: number, flags: number): MaybePromise<void>;
  extents?(next: Context, h: H, count: number, offset: number, flags: number): MaybePromise<Extent[]>;
  cache?(next: Context, h: H, count: number, offset: number, flags: number): MaybePromise<void>;
  /**
   * The metadata contexts (besides base:allocation) served for an export:
   * return the layer below's (lower.metaContexts) plus your own. Default:
   * the layer below's.
   */
  metaContexts?(lower: LowerBackend, exportName: string): MaybePromise<string[]>;
  /** Block status of a context; pass the ones you did not add to next.contextExtents. */
  contextExtents?(next: Context, h: H, context: string, count: number, offset: number, flags: number): MaybePromise<Extent[]>;
}

/** What a plugin or filter module exports: `export default` one of these. */
export type PluginModule = { default: Plugin } | Plugin;
export type FilterModule = { default: Filter } | Filter;
