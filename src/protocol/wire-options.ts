// Pure encode/decode of handshake and option-haggling frames (doc/proto.md).
// Re-exported by wire.ts: import from there.

import {
  CLISERV_MAGIC,
  IHAVEOPT,
  NBD_EXPORT_NAME_PADDING,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_EXPORT,
  NBD_INFO_NAME,
  NBDMAGIC,
  OPTION_REPLY_MAGIC,
} from "./constants.js";
import { WireError, decodeLenString, encodeLenString, needBytes, readU64, writeU64 } from "./wire-base.js";

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
  needBytes(buf, 16, "greeting");
  if (buf.readBigUInt64BE(0) !== NBDMAGIC) throw new WireError("bad magic: not an NBD server");
  const second = buf.readBigUInt64BE(8);
  if (second === CLISERV_MAGIC) return { style: "oldstyle" };
  if (second !== IHAVEOPT) throw new WireError(`bad magic after NBDMAGIC: 0x${second.toString(16)}`);
  needBytes(buf, 18, "greeting");
  return { style: "newstyle", flags: buf.readUInt16BE(16) };
}

// ---- Option haggling ------------------------------------------------------

/** Client option frame: IHAVEOPT, option, length, payload. */
export function encodeOption(option: number, payload: Buffer = Buffer.alloc(0), claimedLength = payload.length): Buffer {
  const b = Buffer.allocUnsafe(16 + payload.length);
  b.writeBigUInt64BE(IHAVEOPT, 0);
  b.writeUInt32BE(option >>> 0, 8);
  // A test may claim another length than it sends (a stalled or short frame).
  b.writeUInt32BE(claimedLength >>> 0, 12);
  payload.copy(b, 16);
  return b;
}
/** Decode a 16-byte option header (server side); throws on bad magic. */
export function decodeOptionHeader(buf: Buffer): { option: number; length: number } {
  needBytes(buf, 16, "option header");
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
  needBytes(buf, 20, "option reply header");
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
  needBytes(buf, 10, "export name reply");
  return { size: readU64(buf, 0), transmissionFlags: buf.readUInt16BE(8) };
}
/** NBD_REP_SERVER data: name length, name, description. */
export function encodeServerReply(name: string, description = ""): Buffer {
  return Buffer.concat([encodeLenString(name), Buffer.from(description, "utf8")]);
}
/** Decode NBD_REP_SERVER data. */
export function decodeServerReply(buf: Buffer): { name: string; description: string } {
  const [name, pos] = decodeLenString(buf, 0, "NBD_REP_SERVER");
  return { name, description: buf.toString("utf8", pos) };
}
/** NBD_OPT_INFO / NBD_OPT_GO payload: name, count, 16-bit info requests. */
export function encodeInfoRequest(name: string, requests: readonly number[] = []): Buffer {
  const tail = Buffer.allocUnsafe(2 + 2 * requests.length);
  tail.writeUInt16BE(requests.length, 0);
  requests.forEach((r, i) => tail.writeUInt16BE(r, 2 + 2 * i));
  return Buffer.concat([encodeLenString(name), tail]);
}
/** Decode an NBD_OPT_INFO / NBD_OPT_GO payload; throws if lengths disagree. */
export function decodeInfoRequest(buf: Buffer): { name: string; requests: number[] } {
  const [name, pos] = decodeLenString(buf, 0, "NBD_OPT_GO");
  needBytes(buf, pos + 2, "NBD_OPT_GO");
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
  needBytes(buf, 2, "NBD_REP_INFO");
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
  return Buffer.concat([encodeLenString(exportName), count, ...queries.map(encodeLenString)]);
}
/** Decode a meta context option payload; throws if lengths disagree. */
export function decodeMetaContextRequest(buf: Buffer): { exportName: string; queries: string[] } {
  let [exportName, pos] = decodeLenString(buf, 0, "meta context request");
  needBytes(buf, pos + 4, "meta context request");
  const n = buf.readUInt32BE(pos);
  pos += 4;
  const queries: string[] = [];
  for (let i = 0; i < n; i++) {
    const [q, next] = decodeLenString(buf, pos, "meta context query");
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
  needBytes(buf, 4, "NBD_REP_META_CONTEXT");
  return { id: buf.readUInt32BE(0), name: buf.toString("utf8", 4) };
}

// ---- NBD_OPT_LIST_HIER (experimental, docs/list-hier.md)

/** NBD_REP_SERVER_DIR flag: the directory is also an export of that name. */
export const NBD_DIR_FLAG_EXPORT = 1 << 0;

/** NBD_OPT_LIST_HIER payload: 32-bit length, the tree path ("" or a prefix ending in ':'). */
export function encodeHierRequest(path: string): Buffer {
  return encodeLenString(path);
}
/** Decode an NBD_OPT_LIST_HIER payload; throws WireError unless it is exactly one string. */
export function decodeHierRequest(buf: Buffer): string {
  const [path, pos] = decodeLenString(buf, 0, "NBD_OPT_LIST_HIER");
  if (pos !== buf.length) throw new WireError(`NBD_OPT_LIST_HIER: ${buf.length - pos} bytes after the path`);
  return path;
}
/** NBD_REP_SERVER_DIR data: name length, name (without the trailing ':'), 32-bit flags, description. */
export function encodeServerDirReply(name: string, flags: number, description = ""): Buffer {
  const f = Buffer.allocUnsafe(4);
  f.writeUInt32BE(flags >>> 0, 0);
  return Buffer.concat([encodeLenString(name), f, Buffer.from(description, "utf8")]);
}
/** Decode NBD_REP_SERVER_DIR data. */
export function decodeServerDirReply(buf: Buffer): { name: string; flags: number; description: string } {
  const [name, pos] = decodeLenString(buf, 0, "NBD_REP_SERVER_DIR");
  needBytes(buf, pos + 4, "NBD_REP_SERVER_DIR flags");
  return { name, flags: buf.readUInt32BE(pos), description: buf.toString("utf8", pos + 4) };
}
