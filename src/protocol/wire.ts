// Encode/decode of NBD wire frames (doc/proto.md), allocating. No I/O, no state.
// Big-endian throughout. 64-bit offsets/sizes are JS numbers (exact below
// 2^53; larger values lose precision but still compare above any export
// size); cookies are bigint so a server can echo any 64 bits exactly.
// Decoders throw WireError on short or malformed input.
// Handshake/option codecs live in wire-options.ts and are re-exported here.

import { NBD_SIMPLE_REPLY_MAGIC, NBD_STRUCTURED_REPLY_MAGIC } from "./constants.js";
import * as T from "./transmission.js";
import { WireError, needBytes, writeU64 } from "./wire-base.js";

export * from "./wire-base.js";
export * from "./wire-options.js";

// ---- Transmission ---------------------------------------------------------
// Allocating conveniences over transmission.ts, the in-place codec the
// server and client use: tests and tools build and check frames with these.

/** A decoded request header. */
export interface RequestHeader {
  flags: number;
  type: number;
  cookie: bigint;
  offset: number;
  length: number;
}
/** Write a request header into target at pos (no payload); compact unless extended. */
export function writeRequest(
  target: Buffer, pos: number, flags: number, type: number, cookie: bigint, offset: number | bigint, length: number | bigint, extended = false,
): void {
  T.writeRequest(target, pos, extended, flags, type, cookie, offset, length);
}
/** Encode a request header (28 bytes, or 32 with extended headers; no payload). */
export function encodeRequest(
  flags: number, type: number, cookie: bigint, offset: number | bigint, length: number | bigint, extended = false,
): Buffer {
  const b = Buffer.allocUnsafe(T.requestSize(extended));
  T.writeRequest(b, 0, extended, flags, type, cookie, offset, length);
  return b;
}
/** Decode a request header at pos; throws on bad magic. */
export function decodeRequest(buf: Buffer, pos = 0, extended = false): RequestHeader {
  needBytes(buf, pos + T.requestSize(extended), "request");
  const h = T.newRequestHeader();
  if (!T.readRequest(buf, pos, extended, h)) throw new WireError("bad request magic");
  return { flags: h.flags, type: h.type, cookie: (BigInt(h.cookieHi) << 32n) | BigInt(h.cookieLo), offset: h.offset, length: h.length };
}
function halves(cookie: bigint): [number, number] {
  const c = BigInt.asUintN(64, cookie);
  return [Number(c >> 32n), Number(c & 0xffffffffn)];
}
/** Encode a 16-byte simple reply header (read data, if any, follows it). */
export function encodeSimpleReply(error: number, cookie: bigint): Buffer {
  const b = Buffer.allocUnsafe(T.SIMPLE_REPLY_SIZE);
  T.writeSimpleReply(b, 0, error, ...halves(cookie));
  return b;
}
/** Decode a 16-byte simple reply header at pos; throws on bad magic. */
export function decodeSimpleReplyHeader(buf: Buffer, pos = 0): { error: number; cookie: bigint } {
  needBytes(buf, pos + 16, "simple reply");
  if (buf.readUInt32BE(pos) !== NBD_SIMPLE_REPLY_MAGIC) throw new WireError("bad simple reply magic");
  return { error: buf.readUInt32BE(pos + 4), cookie: buf.readBigUInt64BE(pos + 8) };
}
/** Encode a chunk header: structured (20 bytes) or extended (32 bytes, with the request offset). */
export function encodeStructuredReplyHeader(flags: number, type: number, cookie: bigint, length: number, extended = false, requestOffset = 0): Buffer {
  const b = Buffer.allocUnsafe(T.chunkHeaderSize(extended));
  T.writeChunk(b, 0, extended, flags, type, ...halves(cookie), requestOffset, length);
  return b;
}
/** Decode a 20-byte structured reply chunk header at pos; throws on bad magic. */
export function decodeStructuredReplyHeader(buf: Buffer, pos = 0): { flags: number; type: number; cookie: bigint; length: number } {
  needBytes(buf, pos + 20, "structured reply");
  if (buf.readUInt32BE(pos) !== NBD_STRUCTURED_REPLY_MAGIC) throw new WireError("bad structured reply magic");
  return { flags: buf.readUInt16BE(pos + 4), type: buf.readUInt16BE(pos + 6), cookie: buf.readBigUInt64BE(pos + 8), length: buf.readUInt32BE(pos + 16) };
}
/** Decode a 32-byte extended reply header at pos; throws on bad magic. */
export function decodeExtendedReplyHeader(buf: Buffer, pos = 0): { flags: number; type: number; cookie: bigint; offset: number; length: number } {
  needBytes(buf, pos + 32, "extended reply");
  const h = T.readReply(buf, pos, buf.length - pos);
  if (!h || h.kind !== "extended") throw new WireError("bad extended reply magic");
  return { flags: h.flags, type: h.type, cookie: h.cookie, offset: h.offset, length: h.length };
}
/** NBD_REPLY_TYPE_ERROR(_OFFSET) payload: error, message length, message[, offset]. */
export function encodeErrorPayload(error: number, message = "", offset?: number): Buffer {
  const m = Buffer.from(message, "utf8").subarray(0, 0xffff);
  const b = Buffer.allocUnsafe(T.errorPayloadSize(m.length) + (offset === undefined ? 0 : 8));
  T.writeErrorPayload(b, 0, error, m);
  if (offset !== undefined) writeU64(b, offset, 6 + m.length);
  return b;
}
/** Decode an error chunk payload; offset is present for ERROR_OFFSET. */
export function decodeErrorPayload(buf: Buffer, withOffset: boolean): { error: number; message: string; offset?: number } {
  try {
    return T.readErrorPayload(buf, 0, buf.length, withOffset);
  } catch (e) {
    throw new WireError(`error chunk: ${(e as Error).message}`);
  }
}
/** NBD_REPLY_TYPE_OFFSET_HOLE payload: offset, 32-bit hole size. */
export function encodeOffsetHole(offset: number, size: number): Buffer {
  const b = Buffer.allocUnsafe(T.OFFSET_HOLE_SIZE);
  T.writeOffsetHole(b, 0, offset, size);
  return b;
}
/** Decode an NBD_REPLY_TYPE_OFFSET_HOLE payload. */
export function decodeOffsetHole(buf: Buffer): { offset: number; size: number } {
  if (buf.length !== T.OFFSET_HOLE_SIZE) throw new WireError("OFFSET_HOLE: length must be 12");
  return T.readOffsetHole(buf, 0);
}
/** One block status descriptor: a run of bytes and its context-defined flags. */
export interface BlockStatusExtent {
  length: number;
  flags: number;
}
/** BLOCK_STATUS payload (or BLOCK_STATUS_EXT with extended): context id, descriptors. */
export function encodeBlockStatusPayload(contextId: number, extents: readonly BlockStatusExtent[], extended = false): Buffer {
  const b = Buffer.allocUnsafe(T.blockStatusSize(extended, extents.length));
  T.writeBlockStatus(b, 0, extended, contextId, extents.map((e) => ({ length: e.length, type: e.flags })));
  return b;
}
/** Decode a BLOCK_STATUS (or, extended, BLOCK_STATUS_EXT) payload. */
export function decodeBlockStatusPayload(buf: Buffer, extended = false): { contextId: number; extents: BlockStatusExtent[] } {
  try {
    return T.readBlockStatus(buf, 0, buf.length, extended);
  } catch (e) {
    throw new WireError((e as Error).message);
  }
}
