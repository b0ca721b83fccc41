// The transmission-phase wire format, both header styles, for server and
// client alike (doc/proto.md, "Transmission"; extended headers from its
// extension-ext-header branch). In-place readers and writers only: no
// allocation, no I/O. Cookies travel as two 32-bit halves so the server
// can echo any 64 bits without a bigint per request.
//
// Compact request (28 bytes):  magic 0x25609513, flags16, type16, cookie64, offset64, length32
// Extended request (32 bytes): magic 0x21e41c71, flags16, type16, cookie64, offset64, length64
//   "With extended headers, the meaning of the *length* field depends on
//   whether *flags* contains NBD_CMD_FLAG_PAYLOAD_LEN (that many
//   additional bytes of payload are present), or if the flag is absent
//   (... *length* instead is an effect length)."
// Simple reply (16 bytes):     magic 0x67446698, error32, cookie64
// Structured chunk (20 bytes): magic 0x668e33ef, flags16, type16, cookie64, length32
// Extended reply (32 bytes):   magic 0x6e8a278c, flags16, type16, cookie64, offset64, length64
//   "The extended reply has an additional field *offset* which MUST match
//   the *offset* of the client's request".

import {
  NBD_EXTENDED_REPLY_MAGIC, NBD_EXTENDED_REQUEST_MAGIC, NBD_REQUEST_MAGIC, NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
} from "./constants.js";

const TWO32 = 0x1_0000_0000;

export const COMPACT_REQUEST_SIZE = 28;
export const EXTENDED_REQUEST_SIZE = 32;
export const SIMPLE_REPLY_SIZE = 16;
export const STRUCTURED_CHUNK_SIZE = 20;
export const EXTENDED_REPLY_SIZE = 32;

/** Size of a request header in the given style. */
export function requestSize(extended: boolean): number {
  return extended ? EXTENDED_REQUEST_SIZE : COMPACT_REQUEST_SIZE;
}
/** Size of a chunk header (structured or extended) in the given style. */
export function chunkHeaderSize(extended: boolean): number {
  return extended ? EXTENDED_REPLY_SIZE : STRUCTURED_CHUNK_SIZE;
}

function u64(buf: Buffer, pos: number): number {
  return buf.readUInt32BE(pos) * TWO32 + buf.readUInt32BE(pos + 4);
}
function putU64(buf: Buffer, pos: number, v: number): void {
  buf.writeUInt32BE(Math.floor(v / TWO32) >>> 0, pos);
  buf.writeUInt32BE(v >>> 0, pos + 4);
}

// ---- requests --------------------------------------------------------------

/** A request header, read in place into a reused object. */
export interface RequestHeader {
  flags: number;
  type: number;
  cookieHi: number;
  cookieLo: number;
  offset: number;
  /** Payload length with NBD_CMD_FLAG_PAYLOAD_LEN or a compact WRITE, else the effect length. */
  length: number;
}

export function newRequestHeader(): RequestHeader {
  return { flags: 0, type: 0, cookieHi: 0, cookieLo: 0, offset: 0, length: 0 };
}

/** The magic a request of this style starts with. */
export function requestMagic(extended: boolean): number {
  return extended ? NBD_EXTENDED_REQUEST_MAGIC : NBD_REQUEST_MAGIC;
}

/**
 * Read a request header at pos into out; false if the magic is not the
 * negotiated style's (the caller hangs up). 64-bit offsets and lengths are
 * exact below 2^53; larger ones still compare above any export size.
 */
export function readRequest(buf: Buffer, pos: number, extended: boolean, out: RequestHeader): boolean {
  if (buf.readUInt32BE(pos) !== requestMagic(extended)) return false;
  out.flags = buf.readUInt16BE(pos + 4);
  out.type = buf.readUInt16BE(pos + 6);
  out.cookieHi = buf.readUInt32BE(pos + 8);
  out.cookieLo = buf.readUInt32BE(pos + 12);
  out.offset = u64(buf, pos + 16);
  out.length = extended ? u64(buf, pos + 24) : buf.readUInt32BE(pos + 24);
  return true;
}

/** Write a request header at pos (payload, if any, follows it). */
export function writeRequest(
  buf: Buffer, pos: number, extended: boolean, flags: number, type: number, cookie: bigint, offset: number | bigint, length: number | bigint,
): void {
  buf.writeUInt32BE(requestMagic(extended), pos);
  buf.writeUInt16BE(flags & 0xffff, pos + 4);
  buf.writeUInt16BE(type & 0xffff, pos + 6);
  buf.writeBigUInt64BE(BigInt.asUintN(64, cookie), pos + 8);
  if (typeof offset === "bigint") buf.writeBigUInt64BE(offset, pos + 16);
  else putU64(buf, pos + 16, offset);
  if (extended) {
    if (typeof length === "bigint") buf.writeBigUInt64BE(length, pos + 24);
    else putU64(buf, pos + 24, length);
  } else buf.writeUInt32BE(Number(length) >>> 0, pos + 24);
}

// ---- replies -----------------------------------------------------------------

/** Simple reply header at pos: error and cookie. */
export function writeSimpleReply(buf: Buffer, pos: number, error: number, cookieHi: number, cookieLo: number): void {
  buf.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, pos);
  buf.writeUInt32BE(error >>> 0, pos + 4);
  buf.writeUInt32BE(cookieHi, pos + 8);
  buf.writeUInt32BE(cookieLo, pos + 12);
}

/**
 * A chunk header at pos: structured (20 bytes) or, with extended headers,
 * extended (32 bytes, carrying the request's offset).
 */
export function writeChunk(
  buf: Buffer, pos: number, extended: boolean, flags: number, type: number, cookieHi: number, cookieLo: number,
  requestOffset: number, length: number,
): void {
  buf.writeUInt32BE(extended ? NBD_EXTENDED_REPLY_MAGIC : NBD_STRUCTURED_REPLY_MAGIC, pos);
  buf.writeUInt16BE(flags, pos + 4);
  buf.writeUInt16BE(type, pos + 6);
  buf.writeUInt32BE(cookieHi, pos + 8);
  buf.writeUInt32BE(cookieLo, pos + 12);
  if (extended) {
    putU64(buf, pos + 16, requestOffset);
    putU64(buf, pos + 24, length);
  } else buf.writeUInt32BE(length >>> 0, pos + 16);
}

/** A reply header as a client reads it. */
export interface ReplyHeader {
  kind: "simple" | "structured" | "extended";
  /** Bytes of header (16, 20 or 32). */
  size: number;
  error: number;
  flags: number;
  type: number;
  cookie: bigint;
  /** The request offset an extended reply echoes (0 otherwise). */
  offset: number;
  /** Payload length of a chunk (0 for a simple reply, whose data length the request decides). */
  length: number;
}

/**
 * The header at pos, or null if fewer than its size are available; throws
 * RangeError on a magic that starts no reply.
 */
export function readReply(buf: Buffer, pos: number, available: number): ReplyHeader | null {
  if (available < 4) return null;
  const magic = buf.readUInt32BE(pos);
  if (magic === NBD_SIMPLE_REPLY_MAGIC) {
    if (available < SIMPLE_REPLY_SIZE) return null;
    return {
      kind: "simple", size: SIMPLE_REPLY_SIZE, error: buf.readUInt32BE(pos + 4), flags: 0, type: 0,
      cookie: buf.readBigUInt64BE(pos + 8), offset: 0, length: 0,
    };
  }
  if (magic === NBD_STRUCTURED_REPLY_MAGIC) {
    if (available < STRUCTURED_CHUNK_SIZE) return null;
    return {
      kind: "structured", size: STRUCTURED_CHUNK_SIZE, error: 0, flags: buf.readUInt16BE(pos + 4),
      type: buf.readUInt16BE(pos + 6), cookie: buf.readBigUInt64BE(pos + 8), offset: 0, length: buf.readUInt32BE(pos + 16),
    };
  }
  if (magic === NBD_EXTENDED_REPLY_MAGIC) {
    if (available < EXTENDED_REPLY_SIZE) return null;
    return {
      kind: "extended", size: EXTENDED_REPLY_SIZE, error: 0, flags: buf.readUInt16BE(pos + 4),
      type: buf.readUInt16BE(pos + 6), cookie: buf.readBigUInt64BE(pos + 8), offset: u64(buf, pos + 16),
      length: u64(buf, pos + 24),
    };
  }
  throw new RangeError(`bad reply magic 0x${magic.toString(16).padStart(8, "0")}`);
}

// ---- chunk payloads ----------------------------------------------------------

/** OFFSET_DATA: the 64-bit offset that precedes the data. */
export const OFFSET_DATA_PREFIX = 8;
/** OFFSET_HOLE payload: "64 bits: offset, 32 bits: hole size (MUST be nonzero)". */
export const OFFSET_HOLE_SIZE = 12;

export function writeOffset(buf: Buffer, pos: number, offset: number): void {
  putU64(buf, pos, offset);
}
export function readOffset(buf: Buffer, pos: number): number {
  return u64(buf, pos);
}

export function writeOffsetHole(buf: Buffer, pos: number, offset: number, size: number): void {
  putU64(buf, pos, offset);
  buf.writeUInt32BE(size >>> 0, pos + 8);
}
export function readOffsetHole(buf: Buffer, pos: number): { offset: number; size: number } {
  return { offset: u64(buf, pos), size: buf.readUInt32BE(pos + 8) };
}

/** NBD_REPLY_TYPE_ERROR payload: error32, message length16, message. */
export function errorPayloadSize(messageBytes: number): number {
  return 6 + messageBytes;
}
/** Message bytes at most (an error chunk's message is for a human; keep it short). */
export const MAX_ERROR_MESSAGE = 1024;

/** Write the ERROR payload at pos; message must already be at most MAX_ERROR_MESSAGE bytes. */
export function writeErrorPayload(buf: Buffer, pos: number, error: number, message: Buffer): void {
  buf.writeUInt32BE(error >>> 0, pos);
  buf.writeUInt16BE(message.length, pos + 4);
  message.copy(buf, pos + 6);
}
export function readErrorPayload(buf: Buffer, pos: number, length: number, withOffset: boolean): { error: number; message: string; offset?: number } {
  if (length < 6) throw new RangeError("error chunk shorter than 6 bytes");
  const n = buf.readUInt16BE(pos + 4);
  if (6 + n + (withOffset ? 8 : 0) > length) throw new RangeError("error chunk message longer than the chunk");
  const out: { error: number; message: string; offset?: number } = {
    error: buf.readUInt32BE(pos), message: buf.toString("utf8", pos + 6, pos + 6 + n),
  };
  if (withOffset) out.offset = u64(buf, pos + 6 + n);
  return out;
}

/** One block status descriptor. */
export interface StatusDescriptor {
  length: number;
  flags: number;
}

/**
 * A status chunk's payload size for n descriptors: BLOCK_STATUS "4 + (a
 * positive integer multiple of 8)", BLOCK_STATUS_EXT "8 + (a positive
 * multiple of 16)".
 */
export function blockStatusSize(extended: boolean, n: number): number {
  return extended ? 8 + 16 * n : 4 + 8 * n;
}

/** Write a status payload at pos (BLOCK_STATUS or, extended, BLOCK_STATUS_EXT). */
export function writeBlockStatus(
  buf: Buffer, pos: number, extended: boolean, contextId: number, ext: readonly { length: number; type: number }[],
): void {
  buf.writeUInt32BE(contextId >>> 0, pos);
  let p = pos + 4;
  if (extended) {
    buf.writeUInt32BE(ext.length, p);
    p += 4;
    for (const e of ext) {
      putU64(buf, p, e.length);
      // "the most-significant 32 bits of *status* MUST be all zeroes" for 32-bit contexts.
      buf.writeUInt32BE(0, p + 8);
      buf.writeUInt32BE(e.type >>> 0, p + 12);
      p += 16;
    }
  } else {
    for (const e of ext) {
      buf.writeUInt32BE(e.length >>> 0, p);
      buf.writeUInt32BE(e.type >>> 0, p + 4);
      p += 8;
    }
  }
}

export function readBlockStatus(
  buf: Buffer, pos: number, length: number, extended: boolean,
): { contextId: number; extents: StatusDescriptor[] } {
  const extents: StatusDescriptor[] = [];
  if (extended) {
    if (length < 24 || (length - 8) % 16 !== 0) throw new RangeError(`BLOCK_STATUS_EXT: bad length ${length}`);
    const n = buf.readUInt32BE(pos + 4);
    if (8 + 16 * n !== length) throw new RangeError(`BLOCK_STATUS_EXT: ${n} descriptors in ${length} bytes`);
    for (let p = pos + 8; p < pos + length; p += 16) {
      if (buf.readUInt32BE(p + 8) !== 0) throw new RangeError("BLOCK_STATUS_EXT: status above 32 bits");
      extents.push({ length: u64(buf, p), flags: buf.readUInt32BE(p + 12) });
    }
  } else {
    if (length < 12 || (length - 4) % 8 !== 0) throw new RangeError(`BLOCK_STATUS: bad length ${length}`);
    for (let p = pos + 4; p < pos + length; p += 8) extents.push({ length: buf.readUInt32BE(p), flags: buf.readUInt32BE(p + 4) });
  }
  return { contextId: buf.readUInt32BE(pos), extents };
}

/**
 * The BLOCK_STATUS request payload (NBD_FLAG_BLOCK_STATUS_PAYLOAD): "8 +
 * n*4 bytes ... 64 bits, effect length; n * 32 bits, list of metacontext
 * ids". Null when the length is not of that form.
 */
export function readBlockStatusPayload(buf: Buffer, pos: number, length: number): { effectLength: number; ids: number[] } | null {
  if (length < 8 || (length - 8) % 4 !== 0) return null;
  const ids: number[] = [];
  for (let p = pos + 8; p < pos + length; p += 4) ids.push(buf.readUInt32BE(p));
  return { effectLength: u64(buf, pos), ids };
}
export function writeBlockStatusPayload(buf: Buffer, pos: number, effectLength: number, ids: readonly number[]): void {
  putU64(buf, pos, effectLength);
  ids.forEach((id, i) => buf.writeUInt32BE(id >>> 0, pos + 8 + 4 * i));
}
