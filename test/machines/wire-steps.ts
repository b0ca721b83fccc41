// Wire-level checks shared by the model tests: "this connection really is in
// transmission, with the reply format and meta contexts it negotiated".
import { expect } from "vitest";
import * as C from "../../src/protocol/constants.js";
import {
  decodeBlockStatusPayload, decodeExtendedReplyHeader, decodeSimpleReplyHeader, decodeStructuredReplyHeader, encodeRequest, readU64,
} from "../../src/protocol/wire.js";
import type { RawConn } from "../helpers/raw.js";

export interface NegotiatedFormat {
  structuredReplies: boolean;
  extendedHeaders: boolean;
  /** The meta contexts selected for the export (by id). */
  metaContexts: { id: number; name: string }[];
}

/** One chunk header of a structured or extended reply. */
async function chunk(conn: RawConn, ext: boolean) {
  if (ext) return decodeExtendedReplyHeader(await conn.read(32, 3000));
  return { ...decodeStructuredReplyHeader(await conn.read(20, 3000)), offset: undefined };
}

/**
 * A READ answered in the negotiated format (simple, structured, or with
 * extended headers); a BLOCK_STATUS answered for every selected context
 * (with its id) or refused when none is; then NBD_CMD_DISC closes.
 */
export async function transmissionWorks(conn: RawConn, n: NegotiatedFormat): Promise<void> {
  const ext = n.extendedHeaders;
  conn.write(encodeRequest(0, C.NBD_CMD_READ, 77n, 512, 512, ext));
  if (!n.structuredReplies) {
    expect(decodeSimpleReplyHeader(await conn.read(16, 3000))).toEqual({ error: 0, cookie: 77n });
    await conn.read(512, 3000);
  } else {
    const h = await chunk(conn, ext);
    expect(h).toMatchObject({ flags: C.NBD_REPLY_FLAG_DONE, type: C.NBD_REPLY_TYPE_OFFSET_DATA, cookie: 77n, length: 8 + 512 });
    if (ext) expect(h.offset, "an extended reply echoes the request offset").toBe(512);
    const body = await conn.read(8 + 512, 3000);
    expect(readU64(body, 0)).toBe(512);
  }
  conn.write(encodeRequest(0, C.NBD_CMD_BLOCK_STATUS, 78n, 0, 4096, ext));
  if (n.metaContexts.length === 0) {
    // "A client MUST NOT send NBD_CMD_BLOCK_STATUS unless ... NBD_OPT_SET_META_CONTEXT": refused, EINVAL.
    if (!n.structuredReplies) expect(decodeSimpleReplyHeader(await conn.read(16, 3000))).toEqual({ error: C.NBD_EINVAL, cookie: 78n });
    else {
      const h = await chunk(conn, ext);
      expect(h).toMatchObject({ flags: C.NBD_REPLY_FLAG_DONE, type: C.NBD_REPLY_TYPE_ERROR, cookie: 78n });
      const body = await conn.read(h.length, 3000);
      expect(body.readUInt32BE(0)).toBe(C.NBD_EINVAL);
    }
  } else {
    const ids: number[] = [];
    for (let i = 0; i < n.metaContexts.length; i++) {
      const h = await chunk(conn, ext);
      expect(h.type).toBe(ext ? C.NBD_REPLY_TYPE_BLOCK_STATUS_EXT : C.NBD_REPLY_TYPE_BLOCK_STATUS);
      expect(h.cookie).toBe(78n);
      expect(h.flags & C.NBD_REPLY_FLAG_DONE, "DONE on the last chunk only").toBe(i === n.metaContexts.length - 1 ? C.NBD_REPLY_FLAG_DONE : 0);
      const p = decodeBlockStatusPayload(await conn.read(h.length, 3000), ext);
      ids.push(p.contextId);
      expect(p.extents.reduce((a, e) => a + e.length, 0)).toBeGreaterThan(0);
    }
    expect(ids.sort()).toEqual(n.metaContexts.map((m) => m.id).sort());
  }
  conn.write(encodeRequest(0, C.NBD_CMD_DISC, 79n, 0, 0, ext));
  expect(await conn.waitClosed(3000), "NBD_CMD_DISC closes the connection").toBe(true);
}
