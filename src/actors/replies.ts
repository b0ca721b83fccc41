// Reply frames of the transmission phase, written in place into buffers
// the request path allocates once (header + payload together).

import * as C from "../protocol/constants.js";

export const SIMPLE_HEADER = 16;
export const CHUNK_HEADER = 20;
/** Structured OFFSET_DATA: chunk header + 64-bit offset, then the data. */
export const DATA_CHUNK_HEADER = CHUNK_HEADER + 8;

export function writeSimpleHeader(buf: Buffer, error: number, cookie: Buffer): void {
  buf.writeUInt32BE(C.NBD_SIMPLE_REPLY_MAGIC, 0);
  buf.writeUInt32BE(error, 4);
  cookie.copy(buf, 8, 0, 8);
}

export function writeChunkHeader(buf: Buffer, flags: number, type: number, cookie: Buffer, length: number): void {
  buf.writeUInt32BE(C.NBD_STRUCTURED_REPLY_MAGIC, 0);
  buf.writeUInt16BE(flags, 4);
  buf.writeUInt16BE(type, 6);
  cookie.copy(buf, 8, 0, 8);
  buf.writeUInt32BE(length, 16);
}

export function simpleReply(error: number, cookie: Buffer): Buffer {
  const b = Buffer.allocUnsafe(SIMPLE_HEADER);
  writeSimpleHeader(b, error, cookie);
  return b;
}

/** NBD_REPLY_TYPE_ERROR: 32-bit error, 16-bit message length, message. */
export function errorChunk(error: number, message: string, cookie: Buffer): Buffer {
  const msg = Buffer.from(message.slice(0, 512), "utf8");
  const b = Buffer.allocUnsafe(CHUNK_HEADER + 6 + msg.length);
  writeChunkHeader(b, C.NBD_REPLY_FLAG_DONE, C.NBD_REPLY_TYPE_ERROR, cookie, 6 + msg.length);
  b.writeUInt32BE(error, CHUNK_HEADER);
  b.writeUInt16BE(msg.length, CHUNK_HEADER + 4);
  msg.copy(b, CHUNK_HEADER + 6);
  return b;
}

/** NBD_REPLY_TYPE_BLOCK_STATUS: context id, then (length, flags) pairs. */
export function blockStatusChunk(contextId: number, extents: { length: number; type: number }[], cookie: Buffer): Buffer {
  const len = 4 + 8 * extents.length;
  const b = Buffer.allocUnsafe(CHUNK_HEADER + len);
  writeChunkHeader(b, C.NBD_REPLY_FLAG_DONE, C.NBD_REPLY_TYPE_BLOCK_STATUS, cookie, len);
  b.writeUInt32BE(contextId, CHUNK_HEADER);
  let p = CHUNK_HEADER + 4;
  for (const e of extents) {
    b.writeUInt32BE(e.length, p);
    b.writeUInt32BE(e.type >>> 0, p + 4);
    p += 8;
  }
  return b;
}
