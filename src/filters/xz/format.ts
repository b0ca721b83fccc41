// The .xz container: streams, their indexes and blocks (the xz file
// format 1.1.0). Only the container is parsed here; the blocks themselves
// are decoded by xz-embedded (the xz-decompress package, WebAssembly).
//
// A file is read backwards from its end, as xz --list does: stream footer
// -> index -> stream header, stream after stream (with stream padding in
// between), so the block map comes from the indexes without decoding
// anything. Every CRC32 of the container (headers, footers, indexes) is
// checked.

import { crc32 } from "../kit/decode/crc32.js";
import type { BlockEntry } from "../kit/decode/image.js";
import { DecodeError, type Source } from "../kit/decode/reader.js";

const HEADER_MAGIC = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]);
/** Indexes larger than this are refused (a record is at most 18 bytes). */
const MAX_INDEX = 256 << 20;

export interface XzBlock extends BlockEntry {
  /** Offset of the block header in the file. */
  coff: number;
  /** Unpadded size (block header + compressed data + check). */
  unpadded: number;
  /** The stream flags of the stream holding it (check type). */
  flags: Buffer;
}

export interface XzIndex {
  streams: number;
  blocks: XzBlock[];
  size: number;
}

const pad4 = (n: number) => (n + 3) & ~3;

/** Size of the check field for a check type (xz format 3.1.2). */
export function checkSize(type: number): number {
  return type === 0 ? 0 : 4 << Math.floor((type - 1) / 3);
}

function fail(msg: string): never {
  throw new DecodeError(`xz: ${msg}`);
}

/** Reads xz multibyte integers (at most 9 bytes, here at most 2^53 - 1). */
class VarReader {
  pos = 0;
  constructor(private readonly b: Buffer) {}
  next(what: string): number {
    let v = 0;
    for (let i = 0, mul = 1; ; i++, mul *= 128) {
      if (this.pos >= this.b.length) fail(`corrupt index: truncated ${what}`);
      if (i >= 9) fail(`corrupt index: ${what} is longer than 9 bytes`);
      const byte = this.b[this.pos++]!;
      v += (byte & 0x7f) * mul;
      if (!(byte & 0x80)) {
        if (byte === 0 && i > 0) fail(`corrupt index: ${what} is not in its shortest form`);
        break;
      }
    }
    if (!Number.isSafeInteger(v)) fail(`${what} ${v} is too large`);
    return v;
  }
}

function flagsOk(f: Buffer): boolean {
  return f[0] === 0 && (f[1]! & 0xf0) === 0;
}

/** One stream ending at `end`: its blocks and where it starts. */
async function readStream(src: Source, end: number): Promise<{ start: number; flags: Buffer; records: [number, number][] }> {
  if (end < 32) fail(`truncated file: a stream needs at least 32 bytes, ${end} left`);
  const footer = await src.read(end - 12, 12, "the stream footer");
  if (footer[10] !== 0x59 || footer[11] !== 0x5a) fail(`no stream footer at ${end - 12} (not an xz file, or truncated)`);
  if (crc32(footer.subarray(4, 10)) !== footer.readUInt32LE(0)) fail(`stream footer at ${end - 12}: CRC32 mismatch`);
  const flags = Buffer.from(footer.subarray(8, 10));
  if (!flagsOk(flags)) fail(`stream footer at ${end - 12}: unsupported stream flags`);
  const indexSize = (footer.readUInt32LE(4) + 1) * 4;
  if (indexSize > MAX_INDEX) fail(`index of ${indexSize} bytes is too large`);
  const indexStart = end - 12 - indexSize;
  if (indexStart < 12) fail(`stream footer at ${end - 12}: the index (${indexSize} bytes) would start before the file`);
  const index = await src.read(indexStart, indexSize, "the index");
  if (index[0] !== 0) fail(`no index at ${indexStart}`);
  if (crc32(index.subarray(0, indexSize - 4)) !== index.readUInt32LE(indexSize - 4)) fail(`index at ${indexStart}: CRC32 mismatch`);
  const r = new VarReader(index.subarray(0, indexSize - 4));
  r.pos = 1;
  const n = r.next("number of records");
  if (n > indexSize / 2) fail(`corrupt index: ${n} records cannot fit in ${indexSize} bytes`);
  const records: [number, number][] = [];
  let blocksSize = 0;
  const minUnpadded = 5 + checkSize(flags[1]!);
  for (let i = 0; i < n; i++) {
    const unpadded = r.next("unpadded size");
    const usize = r.next("uncompressed size");
    if (unpadded < minUnpadded) fail(`corrupt index: block ${i} has unpadded size ${unpadded}`);
    records.push([unpadded, usize]);
    blocksSize += pad4(unpadded);
  }
  // Index padding: zeros up to the CRC32.
  if (pad4(r.pos) !== indexSize - 4 || index.subarray(r.pos, indexSize - 4).some((b) => b !== 0)) {
    fail(`corrupt index at ${indexStart}: bad size or padding`);
  }
  const start = indexStart - blocksSize - 12;
  if (start < 0) fail(`index at ${indexStart}: its blocks (${blocksSize} bytes) would start before the file`);
  const header = await src.read(start, 12, "the stream header");
  if (!header.subarray(0, 6).equals(HEADER_MAGIC)) fail(`no stream header at ${start} (not an xz file, or corrupt)`);
  if (crc32(header.subarray(6, 8)) !== header.readUInt32LE(8)) fail(`stream header at ${start}: CRC32 mismatch`);
  if (!header.subarray(6, 8).equals(flags)) fail(`stream at ${start}: header and footer flags differ`);
  return { start, flags, records };
}

/** The block map of an xz file (every stream), refusing blocks larger than maxBlock. */
export async function readXzIndex(src: Source, maxBlock: number): Promise<XzIndex> {
  const head = await src.read(0, Math.min(6, src.size), "the stream header");
  if (!head.equals(HEADER_MAGIC)) fail("not an xz file (no xz magic at the start)");
  const streams: { start: number; flags: Buffer; records: [number, number][] }[] = [];
  let end = src.size;
  while (end > 0) {
    if (end % 4 !== 0) fail(`file size is not a multiple of 4 bytes (truncated, or trailing garbage)`);
    // Stream padding: zero bytes in multiples of 4, read backwards in chunks.
    for (;;) {
      const n = Math.min(end, 4096);
      const tail = await src.read(end - n, n, "stream padding");
      let z = n;
      while (z >= 4 && tail.readUInt32LE(z - 4) === 0) z -= 4;
      end -= n - z;
      if (z > 0 || end === 0) break;
    }
    if (end === 0) break;
    const s = await readStream(src, end);
    streams.unshift(s);
    end = s.start;
  }
  if (streams.length === 0) fail("no stream in the file");
  const blocks: XzBlock[] = [];
  let uoff = 0;
  for (const s of streams) {
    let coff = s.start + 12;
    for (const [unpadded, usize] of s.records) {
      if (usize > maxBlock) {
        fail(`block at ${coff} is ${usize} bytes uncompressed, larger than xz-max-block (${maxBlock}): recompress with a smaller --block-size, or raise xz-max-block`);
      }
      blocks.push({ uoff, usize, coff, unpadded, flags: s.flags });
      uoff += usize;
      if (!Number.isSafeInteger(uoff)) fail("uncompressed size is too large");
      coff += pad4(unpadded);
    }
  }
  return { streams: streams.length, blocks, size: uoff };
}

function varint(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n % 128) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}

/**
 * A one-block .xz stream around a block copied from the file: stream
 * header, the block, an index of that one record, footer. Any xz decoder
 * then decodes just this block and checks it against its index record.
 */
export function wrapBlock(block: Buffer, b: XzBlock): Buffer {
  const header = Buffer.alloc(12);
  HEADER_MAGIC.copy(header);
  b.flags.copy(header, 6);
  header.writeUInt32LE(crc32(b.flags), 8);
  const rec = [0, ...varint(1), ...varint(b.unpadded), ...varint(b.usize)];
  const index = Buffer.alloc(pad4(rec.length) + 4);
  Buffer.from(rec).copy(index);
  index.writeUInt32LE(crc32(index.subarray(0, index.length - 4)), index.length - 4);
  const footer = Buffer.alloc(12);
  footer.writeUInt32LE(index.length / 4 - 1, 4);
  b.flags.copy(footer, 8);
  footer[10] = 0x59;
  footer[11] = 0x5a;
  footer.writeUInt32LE(crc32(footer.subarray(4, 10)), 0);
  return Buffer.concat([header, block, index, footer]);
}
