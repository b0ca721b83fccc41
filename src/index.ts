// The public API of the nbdstate package: what a plugin or filter of your
// own imports (`import { definePlugin, NbdError, NBD_EIO } from "nbdstate"`).
// See README.md "Writing a plugin" and examples/.

import type { Filter, MaybePromise, Plugin } from "./backend/types.js";

export type {
  BlockSize,
  CacheMode,
  ConnectionInfo,
  Context,
  DataOps,
  ExportEntry,
  Extent,
  Filter,
  FilterModule,
  FilterOpenArgs,
  FuaMode,
  ListParams,
  LowerBackend,
  MaybePromise,
  OpenOptions,
  PeerInfo,
  Plugin,
  PluginModule,
  ReadPiece,
  ServerServices,
} from "./backend/types.js";
export { FLAG_FAST_ZERO, FLAG_FUA, FLAG_MAY_TRIM, FLAG_REQ_ONE, NbdError } from "./backend/types.js";

/** The errno values NbdError takes (the NBD protocol's: a client sees exactly these). */
export {
  NBD_EINVAL,
  NBD_EIO,
  NBD_ENOMEM,
  NBD_ENOSPC,
  NBD_ENOTSUP,
  NBD_EOVERFLOW,
  NBD_EPERM,
  NBD_ESHUTDOWN,
  /** Extent.type bits: a hole (unallocated), and reads as zeros. */
  NBD_STATE_HOLE,
  NBD_STATE_ZERO,
} from "./protocol/constants.js";

/** nbdkit_parse_size and nbdkit_parse_bool, for config(): "1M", "512s", "yes", "off". */
export { parseBool, parseSize } from "./backend/size.js";

/**
 * `export const debugFlags = { name: 0 }` in a plugin or filter module:
 * `-D LAYER.name=N` sets `debugFlags.name` to N before load() (nbdkit's
 * debug flags, which are C globals there).
 */
export type DebugFlags = Record<string, number>;

/**
 * Identity helpers that only give the object its type (and the handle type
 * H to every callback): `export default definePlugin({ name: "x", ... })`,
 * or with a factory, called once per server: `export default
 * definePlugin(() => ({ ... }))`.
 */
export function definePlugin<H = unknown>(plugin: Plugin<H>): Plugin<H>;
export function definePlugin<H = unknown>(factory: () => MaybePromise<Plugin<H>>): () => MaybePromise<Plugin<H>>;
export function definePlugin<H>(p: Plugin<H> | (() => MaybePromise<Plugin<H>>)) {
  return p;
}

export function defineFilter<H = unknown>(filter: Filter<H>): Filter<H>;
export function defineFilter<H = unknown>(factory: () => MaybePromise<Filter<H>>): () => MaybePromise<Filter<H>>;
export function defineFilter<H>(f: Filter<H> | (() => MaybePromise<Filter<H>>)) {
  return f;
}
