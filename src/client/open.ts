// openClient: connect, negotiate what the caller wants, and go to an export.

import { NBD_REP_ERR_UNSUP } from "../protocol/constants.js";
import { NbdClient } from "./client.js";
import { NbdOptionError } from "./errors.js";
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

/**
 * Connect and enter transmission: structured replies (unless disabled),
 * meta contexts, NBD_OPT_GO; falls back to NBD_OPT_EXPORT_NAME on servers
 * without fixed newstyle or without NBD_OPT_GO.
 */
export async function openClient(o: OpenOptions): Promise<NbdClient> {
  const c = await NbdClient.connect(o);
  const name = o.exportName ?? "";
  try {
    if (!c.fixedNewstyle) {
      await c.exportName(name);
      return c;
    }
    if (o.structuredReplies !== false) {
      const ext = o.extendedHeaders !== false && (await c.extendedHeadersOption());
      if (!ext) await c.structuredReply();
    }
    if (o.metaContexts?.length && c.structuredReplies) await c.setMetaContext(name, o.metaContexts);
    try {
      await c.go(name, { requestBlockSize: o.requestBlockSize, infoRequests: o.infoRequests });
    } catch (err) {
      if (!(err instanceof NbdOptionError) || err.replyType !== NBD_REP_ERR_UNSUP) throw err;
      await c.exportName(name);
    }
    return c;
  } catch (err) {
    c.destroy(err as Error);
    throw err;
  }
}
