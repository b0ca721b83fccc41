// What openClient (NbdClient.open) negotiates.

import type { ConnectOptions } from "./handshake.js";

/** Options for openClient: where to connect and what to negotiate. */
export type OpenOptions = ConnectOptions & {
  exportName?: string;
  /** Negotiate structured replies (default true). */
  structuredReplies?: boolean;
  /**
   * Try NBD_OPT_EXTENDED_HEADERS first (default true, as libnbd 1.18+ and
   * qemu 8.2+ do), falling back to structured replies.
   */
  extendedHeaders?: boolean;
  /** Meta contexts to select, e.g. ["base:allocation"] (needs structured replies). */
  metaContexts?: string[];
  /** Ask for NBD_INFO_BLOCK_SIZE in NBD_OPT_GO. */
  requestBlockSize?: boolean;
  /** Other NBD_INFO_* to ask for in NBD_OPT_GO (e.g. NBD_INFO_DESCRIPTION). */
  infoRequests?: number[];
};
