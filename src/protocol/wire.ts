// Pure encode/decode of NBD wire frames (doc/proto.md). No I/O, no state.
// Big-endian throughout. 64-bit offsets/sizes are JS numbers (exact below
// 2^53; larger values lose precision but still compare above any export
// size); cookies are bigint so a server can echo any 64 bits exactly.
// Decoders throw WireError on short or malformed input.

import {
  CLISERV_MAGIC,
  IHAVEOPT,
  NBD_EXPORT_NAME_PADDING,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_EXPORT,
  NBD_INFO_NAME,
  NBD_REQUEST_MAGIC,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
  NBDMAGIC,
  OPTION_REPLY_MAGIC,
} from "./constants.js";

/** Thrown by decoders when bytes do not form the expected frame. */
export class WireError extends Error {
  override name = "WireError";
}

const TWO32 = 0x1_0000_0000;

function need(buf: Buffer, n: number, what: string): void {
  if (buf.length < n) throw new WireError(`${what}: need ${n} bytes, got ${buf.length}`);
}
/** Write a uint64 given as number or bigint at pos. */
export function writeU64(buf: Buffer, v: number | bigint, pos: number): void {
  if (typeof v === "bigint") buf.writeBigUInt64BE(v, pos);
  else {
    buf.writeUInt32BE(Math.floor(v / TWO32) >>> 0, pos);
    buf.writeUInt32BE(v >>> 0, pos + 4);
  }
}
/** Read a uint64 at pos as a number. */
export function readU64(buf: Buffer, pos: number): number {
  return buf.readUInt32BE(pos) * TWO32 + buf.readUInt32BE(pos + 4);
}
function lenString(s: string): Buffer {
  const b = Buffer.from(s, "utf8");
  const out = Buffer.allocUnsafe(4 + b.length);
  out.writeUInt32BE(b.length, 0);
  b.copy(out, 4);
  return out;
}
function readLenString(buf: Buffer, pos: number, what: string): [string, number] {
  need(buf, pos + 4, what);
  const n = buf.readUInt32BE(pos);
  need(buf, pos + 4 + n, what);
  return [buf.toString("utf8", pos + 4, pos + 4 + n), pos + 4 + n];
}

// ---- Handshake ------------------------------------------------------------

/** Server greeting: NBDMAGIC, IHAVEOPT, 16-bit handshake flags (18 bytes). */
export function encodeGreeting(handshakeFlags: number): Buffer {
  const b = Buffer.allocUnsafe(18);
  b.writeBigUInt64BE(NBDMAGIC, 0);
  b.writeBigUInt64BE(IHAVEOPT, 8);
  b.writeUInt16BE(handshakeFlags, 16);
  return b;
}
/** Decode the first 18 bytes a server sends; oldstyle is reported, not decoded. */
export function decodeGreeting(buf: Buffer): { style: "newstyle"; flags: number } | { style: "oldstyle" } {
  need(buf, 16, "greeting");
  if (buf.readBigUInt64BE(0) !== NBDMAGIC) throw new WireError("bad magic: not an NBD server");
  const second = buf.readBigUInt64BE(8);
  if (second === CLISERV_MAGIC) return { style: "oldstyle" };
  if (second !== IHAVEOPT) throw new WireError(`bad magic after NBDMAGIC: 0x${second.toString(16)}`);
  need(buf, 18, "greeting");
  return { style: "newstyle", flags: buf.readUInt16BE(16) };
}

// ---- Option haggling ------------------------------------------------------

/** Client option frame: IHAVEOPT, option, length, payload. */
export function encodeOption(option: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.allocUnsafe(16 + payload.length);
  b.writeBigUInt64BE(IHAVEOPT, 0);
  b.writeUInt32BE(option >>> 0, 8);
  b.writeUInt32BE(payload.length, 12);
  payload.copy(b, 16);
  return b;
}
/** Decode a 16-byte option header (server side); throws on bad magic. */
export function decodeOptionHeader(buf: Buffer): { option: number; length: number } {
  need(buf, 16, "option header");
  if (buf.readBigUInt64BE(0) !== IHAVEOPT) throw new WireError("bad option magic");
  return { option: buf.readUInt32BE(8), length: buf.readUInt32BE(12) };
}
/** Server option reply frame: magic, option, reply type, length, data. */
export function encodeOptionReply(option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.allocUnsafe(20 + data.length);
  b.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0);
  b.writeUInt32BE(option >>> 0, 8);
  b.writeUInt32BE(type >>> 0, 12);
  b.writeUInt32BE(data.length, 16);
  data.copy(b, 20);
  return b;
}
/** Decode a 20-byte option reply header; throws on bad magic. */
export function decodeOptionReplyHeader(buf: Buffer): { option: number; type: number; length: number } {
  need(buf, 20, "option reply header");
  if (buf.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC) throw new WireError("bad option reply magic");
  return { option: buf.readUInt32BE(8), type: buf.readUInt32BE(12), length: buf.readUInt32BE(16) };
}
/** NBD_OPT_EXPORT_NAME reply: size, flags, and 124 zeroes unless noZeroes. */
export function encodeExportNameReply(size: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(10 + (noZeroes ? 0 : NBD_EXPORT_NAME_PADDING));
  writeU64(b, size, 0);
  b.writeUInt16BE(transmissionFlags, 8);
  return b;
}
/** Decode the first 10 bytes of an NBD_OPT_EXPORT_NAME reply. */
export function decodeExportNameReply(buf: Buffer): { size: number; transmissionFlags: number } {
  need(buf, 10, "export name reply");
  return { size: readU64(buf, 0), transmissionFlags: buf.readUInt16BE(8) };
}
/** NBD_REP_SERVER data: name length, name, description. */
export function encodeServerReply(name: string, description = ""): Buffer {
  return Buffer.concat([lenString(name), Buffer.from(description, "utf8")]);
}
/** Decode NBD_REP_SERVER data. */
export function decodeServerReply(buf: Buffer): { name: string; description: string } {
  const [name, pos] = readLenString(buf, 0, "NBD_REP_SERVER");
  return { name, description: buf.toString("utf8", pos) };
}
/** NBD_OPT_INFO / NBD_OPT_GO payload: name, count, 16-bit info requests. */
export function encodeInfoRequest(name: string, requests: readonly number[] = []): Buffer {
  const tail = Buffer.allocUnsafe(2 + 2 * requests.length);
  tail.writeUInt16BE(requests.length, 0);
  requests.forEach((r, i) => tail.writeUInt16BE(r, 2 + 2 * i));
  return Buffer.concat([lenString(name), tail]);
}
/** Decode an NBD_OPT_INFO / NBD_OPT_GO payload; throws if lengths disagree. */
export function decodeInfoRequest(buf: Buffer): { name: string; requests: number[] } {
  const [name, pos] = readLenString(buf, 0, "NBD_OPT_GO");
  need(buf, pos + 2, "NBD_OPT_GO");
  const n = buf.readUInt16BE(pos);
  if (buf.length !== pos + 2 + 2 * n) throw new WireError("NBD_OPT_GO: length mismatch");
  const requests: number[] = [];
  for (let i = 0; i < n; i++) requests.push(buf.readUInt16BE(pos + 2 + 2 * i));
  return { name, requests };
}

/** An NBD_REP_INFO payload, by NBD_INFO_* type. */
export type InfoReply =
  | { type: typeof NBD_INFO_EXPORT; size: number; transmissionFlags: number }
  | { type: typeof NBD_INFO_NAME; name: string }
  | { type: typeof NBD_INFO_DESCRIPTION; description: string }
  | { type: typeof NBD_INFO_BLOCK_SIZE; minimum: number; preferred: number; maximum: number }
  | { type: number; raw: Buffer };

/** Encode an NBD_REP_INFO payload (16-bit type, then type-specific data). */
export function encodeInfoReply(info: InfoReply): Buffer {
  let body: Buffer;
  if ("size" in info) {
    body = Buffer.allocUnsafe(10);
    writeU64(body, info.size, 0);
    body.writeUInt16BE(info.transmissionFlags, 8);
  } else if ("name" in info) body = Buffer.from(info.name, "utf8");
  else if ("description" in info) body = Buffer.from(info.description, "utf8");
  else if ("minimum" in info) {
    body = Buffer.allocUnsafe(12);
    body.writeUInt32BE(info.minimum, 0);
    body.writeUInt32BE(info.preferred, 4);
    body.writeUInt32BE(info.maximum, 8);
  } else body = info.raw;
  const head = Buffer.allocUnsafe(2);
  head.writeUInt16BE(info.type, 0);
  return Buffer.concat([head, body]);
}
/** Decode an NBD_REP_INFO payload; unknown types come back as raw bytes. */
export function decodeInfoReply(buf: Buffer): InfoReply {
  need(buf, 2, "NBD_REP_INFO");
  const type = buf.readUInt16BE(0);
  const body = buf.subarray(2);
  const exact = (n: number) => {
    if (body.length !== n) throw new WireError(`NBD_REP_INFO type ${type}: bad length ${buf.length}`);
  };
  switch (type) {
    case NBD_INFO_EXPORT:
      exact(10);
      return { type, size: readU64(body, 0), transmissionFlags: body.readUInt16BE(8) };
    case NBD_INFO_NAME:
      return { type, name: body.toString("utf8") };
    case NBD_INFO_DESCRIPTION:
      return { type, description: body.toString("utf8") };
    case NBD_INFO_BLOCK_SIZE:
      exact(12);
      return { type, minimum: body.readUInt32BE(0), preferred: body.readUInt32BE(4), maximum: body.readUInt32BE(8) };
    default:
      return { type, raw: body };
  }
}
/** NBD_OPT_{LIST,SET}_META_CONTEXT payload: export name, query count, queries. */
export function encodeMetaContextRequest(exportName: string, queries: readonly string[]): Buffer {
  const count = Buffer.allocUnsafe(4);
  count.writeUInt32BE(queries.length, 0);
  return Buffer.concat([lenString(exportName), count, ...queries.map(lenString)]);
}
/** Decode a meta context option payload; throws if lengths disagree. */
export function decodeMetaContextRequest(buf: Buffer): { exportName: string; queries: string[] } {
  let [exportName, pos] = readLenString(buf, 0, "meta context request");
  need(buf, pos + 4, "meta context request");
  const n = buf.readUInt32BE(pos);
  pos += 4;
  const queries: string[] = [];
  for (let i = 0; i < n; i++) {
    const [q, next] = readLenString(buf, pos, "meta context query");
    queries.push(q);
    pos = next;
  }
  if (pos !== buf.length) throw new WireError("meta context request: trailing bytes");
  return { exportName, queries };
}
/** NBD_REP_META_CONTEXT data: 32-bit context id, name. */
export function encodeMetaContextReply(id: number, name: string): Buffer {
  const n = Buffer.from(name, "utf8");
  const b = Buffer.allocUnsafe(4 + n.length);
  b.writeUInt32BE(id >>> 0, 0);
  n.copy(b, 4);
  return b;
}
/** Decode NBD_REP_META_CONTEXT data. */
export function decodeMetaContextReply(buf: Buffer): { id: number; name: string } {
  need(buf, 4, "NBD_REP_META_CONTEXT");
  return { id: buf.readUInt32BE(0), name: buf.toString("utf8", 4) };
}

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
  need(buf, pos + 28, "request");
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
  need(buf, pos + 16, "simple reply");
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
  need(buf, pos + 20, "structured reply");
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
  need(buf, 6, "error chunk");
  const n = buf.readUInt16BE(4);
  need(buf, 6 + n + (withOffset ? 8 : 0), "error chunk");
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
