// Shared helpers for the wire codecs: errors, 64-bit fields, strings.

/** Thrown by decoders when bytes do not form the expected frame. */
export class WireError extends Error {
  override name = "WireError";
}

const TWO32 = 0x1_0000_0000;

/** Throw WireError unless buf holds at least n bytes. */
export function needBytes(buf: Buffer, n: number, what: string): void {
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
/** Read a uint64 at pos as a number (exact below 2^53). */
export function readU64(buf: Buffer, pos: number): number {
  return buf.readUInt32BE(pos) * TWO32 + buf.readUInt32BE(pos + 4);
}
/** A string as 32-bit length + UTF-8 bytes. */
export function encodeLenString(s: string): Buffer {
  const b = Buffer.from(s, "utf8");
  const out = Buffer.allocUnsafe(4 + b.length);
  out.writeUInt32BE(b.length, 0);
  b.copy(out, 4);
  return out;
}
/** Decode a 32-bit length + UTF-8 string at pos: [string, position after it]. */
export function decodeLenString(buf: Buffer, pos: number, what: string): [string, number] {
  needBytes(buf, pos + 4, what);
  const n = buf.readUInt32BE(pos);
  needBytes(buf, pos + 4 + n, what);
  return [buf.toString("utf8", pos + 4, pos + 4 + n), pos + 4 + n];
}
