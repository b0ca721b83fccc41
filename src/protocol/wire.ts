// Pure encode/decode of NBD wire frames (doc/proto.md). No I/O, no state.
// Big-endian throughout. 64-bit offsets/sizes are JS numbers (exact below
// 2^53; larger values lose precision but still compare above any export
// size); cookies are bigint so a server can echo any 64 bits exactly.
// Decoders throw WireError on short or malformed input.
// Handshake/option codecs live in wire-options.ts and are re-exported here.

import { NBD_REQUEST_MAGIC, NBD_SIMPLE_REPLY_MAGIC, NBD_STRUCTURED_REPLY_MAGIC } from "./constants.js";
import { WireError, needBytes, readU64, writeU64 } from "./wire-base.js";

export * from "./wire-base.js";
export * from "./wire-options.js";

// ---- Transmission ---------------------------------------------------------

/** A decoded request header. */
export interface RequestHeader {
  flags: number;
  type: number;
  cookie: bigint;
  offset: number;
  length: number;
}
/** Write a 28-byte request header into target at pos (no payload). */
export function writeRequest(target: Buffer, pos: number, flags: number, type: number, cookie: bigint, offset: number | bigint, length: number): void {
  target.writeUInt32BE(NBD_REQUEST_MAGIC, pos);
  target.writeUInt16BE(flags & 0xffff, pos + 4);
  target.writeUInt16BE(type & 0xffff, pos + 6);
  target.writeBigUInt64BE(cookie, pos + 8);
  writeU64(target, offset, pos + 16);
  target.writeUInt32BE(length >>> 0, pos + 24);
}
/** Encode a 28-byte request header (no payload). */
export function encodeRequest(flags: number, type: number, cookie: bigint, offset: number | bigint, length: number): Buffer {
  const b = Buffer.allocUnsafe(28);
  writeRequest(b, 0, flags, type, cookie, offset, length);
  return b;
}
/** Decode a 28-byte request header at pos; throws on bad magic. */
export function decodeRequest(buf: Buffer, pos = 0): RequestHeader {
  needBytes(buf, pos + 28, "request");
  if (buf.readUInt32BE(pos) !== NBD_REQUEST_MAGIC) throw new WireError("bad request magic");
  return {
    flags: buf.readUInt16BE(pos + 4),
    type: buf.readUInt16BE(pos + 6),
    cookie: buf.readBigUInt64BE(pos + 8),
    offset: readU64(buf, pos + 16),
    length: buf.readUInt32BE(pos + 24),
  };
}
/** Encode a 16-byte simple reply header (read data, if any, follows it). */
export function encodeSimpleReply(error: number, cookie: bigint): Buffer {
  const b = Buffer.allocUnsafe(16);
  b.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(error >>> 0, 4);
  b.writeBigUInt64BE(cookie, 8);
  return b;
}
/** Decode a 16-byte simple reply header at pos; throws on bad magic. */
export function decodeSimpleReplyHeader(buf: Buffer, pos = 0): { error: number; cookie: bigint } {
  needBytes(buf, pos + 16, "simple reply");
  if (buf.readUInt32BE(pos) !== NBD_SIMPLE_REPLY_MAGIC) throw new WireError("bad simple reply magic");
  return { error: buf.readUInt32BE(pos + 4), cookie: buf.readBigUInt64BE(pos + 8) };
}
/** Encode a 20-byte structured reply chunk header (payload follows it). */
export function encodeStructuredReplyHeader(flags: number, type: number, cookie: bigint, length: number): Buffer {
  const b = Buffer.allocUnsafe(20);
  b.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeBigUInt64BE(cookie, 8);
  b.writeUInt32BE(length >>> 0, 16);
  return b;
}
/** Decode a 20-byte structured reply chunk header at pos; throws on bad magic. */
export function decodeStructuredReplyHeader(buf: Buffer, pos = 0): { flags: number; type: number; cookie: bigint; length: number } {
  needBytes(buf, pos + 20, "structured reply");
  if (buf.readUInt32BE(pos) !== NBD_STRUCTURED_REPLY_MAGIC) throw new WireError("bad structured reply magic");
  return { flags: buf.readUInt16BE(pos + 4), type: buf.readUInt16BE(pos + 6), cookie: buf.readBigUInt64BE(pos + 8), length: buf.readUInt32BE(pos + 16) };
}
/** NBD_REPLY_TYPE_ERROR(_OFFSET) payload: error, message length, message[, offset]. */
export function encodeErrorPayload(error: number, message = "", offset?: number): Buffer {
  const m = Buffer.from(message, "utf8").subarray(0, 0xffff);
  const b = Buffer.allocUnsafe(6 + m.length + (offset === undefined ? 0 : 8));
  b.writeUInt32BE(error >>> 0, 0);
  b.writeUInt16BE(m.length, 4);
  m.copy(b, 6);
  if (offset !== undefined) writeU64(b, offset, 6 + m.length);
  return b;
}
/** Decode an error chunk payload; offset is present for ERROR_OFFSET. */
export function decodeErrorPayload(buf: Buffer, withOffset: boolean): { error: number; message: string; offset?: number } {
  needBytes(buf, 6, "error chunk");
  const n = buf.readUInt16BE(4);
  needBytes(buf, 6 + n + (withOffset ? 8 : 0), "error chunk");
  const out: { error: number; message: string; offset?: number } = { error: buf.readUInt32BE(0), message: buf.toString("utf8", 6, 6 + n) };
  if (withOffset) out.offset = readU64(buf, 6 + n);
  return out;
}
/** NBD_REPLY_TYPE_OFFSET_HOLE payload: offset, 32-bit hole size. */
export function encodeOffsetHole(offset: number, size: number): Buffer {
  const b = Buffer.allocUnsafe(12);
  writeU64(b, offset, 0);
  b.writeUInt32BE(size >>> 0, 8);
  return b;
}
/** Decode an NBD_REPLY_TYPE_OFFSET_HOLE payload. */
export function decodeOffsetHole(buf: Buffer): { offset: number; size: number } {
  if (buf.length !== 12) throw new WireError("OFFSET_HOLE: length must be 12");
  return { offset: readU64(buf, 0), size: buf.readUInt32BE(8) };
}
/** One block status descriptor: a run of bytes and its context-defined flags. */
export interface BlockStatusExtent {
  length: number;
  flags: number;
}
/** NBD_REPLY_TYPE_BLOCK_STATUS payload: context id, (length, flags) pairs. */
export function encodeBlockStatusPayload(contextId: number, extents: readonly BlockStatusExtent[]): Buffer {
  const b = Buffer.allocUnsafe(4 + 8 * extents.length);
  b.writeUInt32BE(contextId >>> 0, 0);
  extents.forEach((e, i) => {
    b.writeUInt32BE(e.length >>> 0, 4 + 8 * i);
    b.writeUInt32BE(e.flags >>> 0, 8 + 8 * i);
  });
  return b;
}
/** Decode an NBD_REPLY_TYPE_BLOCK_STATUS payload. */
export function decodeBlockStatusPayload(buf: Buffer): { contextId: number; extents: BlockStatusExtent[] } {
  if (buf.length < 12 || (buf.length - 4) % 8 !== 0) throw new WireError(`BLOCK_STATUS: bad length ${buf.length}`);
  const extents: BlockStatusExtent[] = [];
  for (let p = 4; p < buf.length; p += 8) extents.push({ length: buf.readUInt32BE(p), flags: buf.readUInt32BE(p + 4) });
  return { contextId: buf.readUInt32BE(0), extents };
}
