// The zstd container: frames (RFC 8878) and the seekable format's seek
// table (facebook/zstd contrib/seekable_format), parsed without decoding.
//
// A seekable file ends with a skippable frame holding the seek table
// (compressed and decompressed size of every frame); its last four bytes
// are 0x8F92EAB1. Any other file is walked frame by frame, block header by
// block header (skipping the block contents), which gives each frame's
// compressed size; frames that declare their content size can then be
// decoded one by one.

import type { BlockEntry } from "../kit/decode/image.js";
import { DecodeError, type Source } from "../kit/decode/reader.js";

export const ZSTD_MAGIC = 0xfd2fb528;
export const SEEKABLE_MAGIC = 0x8f92eab1;
export const SEEK_TABLE_SKIPPABLE = 0x184d2a5e;
/** ZSTD_SEEKABLE_MAXFRAMES: more frames than this are refused. */
const MAX_FRAMES = 0x8000000;
/** A frame window larger than zstd's default limit (2^27) is refused. */
export const MAX_WINDOW = 1 << 27;

export interface ZstdFrame extends BlockEntry {
  coff: number;
  csize: number;
  /** The seek table's checksum of the frame's data (low 32 bits of XXH64), if it has them. */
  tableSum?: number;
}

/** A frame found by walking the file (its content size may be unknown). */
export interface WalkedFrame {
  coff: number;
  csize: number;
}

export type ZstdIndex =
  | { kind: "seekable"; frames: ZstdFrame[]; checksums: boolean }
  | { kind: "frames"; frames: ZstdFrame[] }
  /** Some frame has no content size (or is too large): decode the whole file once, frame by frame. */
  | { kind: "stream"; why: string; frames: WalkedFrame[] };

function fail(msg: string): never {
  throw new DecodeError(`zstd: ${msg}`);
}

const isSkippable = (magic: number) => magic >>> 4 === 0x184d2a5;

/** Reads ahead in windows, so walking many small headers costs few reads below. */
class Cursor {
  private buf: Buffer = Buffer.alloc(0);
  private at = 0;
  constructor(private readonly src: Source) {}
  async bytes(off: number, n: number, why: string): Promise<Buffer> {
    if (off < this.at || off + n > this.at + this.buf.length) {
      const len = Math.min(Math.max(n, 64 << 10), this.src.size - off);
      this.buf = await this.src.read(off, Math.max(len, n), why);
      this.at = off;
    }
    return this.buf.subarray(off - this.at, off - this.at + n);
  }
}

async function seekTable(src: Source): Promise<ZstdIndex> {
  const foot = await src.read(src.size - 9, 9, "the seek table footer");
  const n = foot.readUInt32LE(0);
  const desc = foot[4]!;
  if (desc & 0x7c) fail("seek table: reserved descriptor bits are set (a newer format?)");
  if (n > MAX_FRAMES) fail(`seek table: ${n} frames is more than the format allows (${MAX_FRAMES})`);
  const checksums = (desc & 0x80) !== 0;
  const entry = checksums ? 12 : 8;
  const frameSize = n * entry + 9;
  const start = src.size - 8 - frameSize;
  if (start < 0) fail(`seek table: ${n} entries do not fit in the file (truncated, or corrupt)`);
  const table = await src.read(start, 8 + frameSize, "the seek table");
  if (table.readUInt32LE(0) !== SEEK_TABLE_SKIPPABLE || table.readUInt32LE(4) !== frameSize) {
    fail(`seek table: no skippable frame header at ${start} (corrupt seek table)`);
  }
  const frames: ZstdFrame[] = [];
  let coff = 0;
  let uoff = 0;
  for (let i = 0; i < n; i++) {
    const csize = table.readUInt32LE(8 + i * entry);
    const usize = table.readUInt32LE(12 + i * entry);
    frames.push(checksums ? { coff, csize, uoff, usize, tableSum: table.readUInt32LE(16 + i * entry) } : { coff, csize, uoff, usize });
    coff += csize;
    uoff += usize;
  }
  if (coff !== start) fail(`seek table: its frames end at ${coff}, but the seek table starts at ${start}`);
  return { kind: "seekable", frames, checksums };
}

interface FrameHeader {
  /** Header length in bytes (from the magic). */
  length: number;
  contentSize: number | null;
  window: number;
  checksum: boolean;
  dictionary: boolean;
}

export function frameHeader(h: Buffer, at: number): FrameHeader {
  if (h.length < 6) fail(`frame at ${at}: truncated header`);
  const d = h[4]!;
  const fcsFlag = d >> 6;
  const single = (d >> 5) & 1;
  if (d & 0x08) fail(`frame at ${at}: reserved bit set in the frame header`);
  const dictLen = [0, 1, 2, 4][d & 3]!;
  const fcsLen = fcsFlag === 0 ? single : 1 << fcsFlag;
  let p = 5;
  let window = 0;
  if (!single) {
    const w = h[p++]!;
    const base = 2 ** (10 + (w >> 3));
    window = base + (base / 8) * (w & 7);
  }
  const length = p + dictLen + fcsLen;
  if (h.length < length) fail(`frame at ${at}: truncated header`);
  const dictId = dictLen ? h.readUIntLE(p, dictLen) : 0;
  p += dictLen;
  let contentSize: number | null = null;
  if (fcsLen === 1) contentSize = h[p]!;
  else if (fcsLen === 2) contentSize = h.readUInt16LE(p) + 256;
  else if (fcsLen === 4) contentSize = h.readUInt32LE(p);
  else if (fcsLen === 8) {
    const big = h.readBigUInt64LE(p);
    contentSize = big > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(big);
  }
  if (single) window = contentSize!;
  return { length, contentSize, window, checksum: ((d >> 2) & 1) === 1, dictionary: dictId !== 0 };
}

/** Walk every frame from the start, or say why the file must be decoded as one stream. */
async function walkFrames(src: Source, maxFrame: number): Promise<ZstdIndex> {
  const cur = new Cursor(src);
  const frames: ZstdFrame[] = [];
  const all: WalkedFrame[] = [];
  let why: string | null = null;
  let uoff = 0;
  let off = 0;
  while (off < src.size) {
    const magic = (await cur.bytes(off, 4, "a frame header")).readUInt32LE(0);
    if (isSkippable(magic)) {
      const len = (await cur.bytes(off, 8, "a skippable frame header")).readUInt32LE(4);
      off += 8 + len;
      if (off > src.size) fail(`skippable frame runs past the end of the file (truncated)`);
      continue;
    }
    if (magic !== ZSTD_MAGIC) fail(off === 0 ? "not a zstd file (no zstd magic at the start)" : `no frame at ${off} (corrupt, or trailing garbage)`);
    const h = frameHeader(await cur.bytes(off, Math.min(18, src.size - off), "a frame header"), off);
    if (h.dictionary) fail(`frame at ${off} needs a dictionary, which this filter cannot supply`);
    if (h.window > MAX_WINDOW) fail(`frame at ${off} needs a ${h.window}-byte window, more than ${MAX_WINDOW} (zstd's default limit)`);
    let p = off + h.length;
    for (let last = 0; !last; ) {
      const bh = (await cur.bytes(p, 3, "a block header")).readUIntLE(0, 3);
      last = bh & 1;
      const type = (bh >> 1) & 3;
      const size = bh >>> 3;
      if (type === 3) fail(`frame at ${off}: reserved block type at ${p}`);
      if (size > 128 << 10) fail(`frame at ${off}: block at ${p} is larger than 128 KiB`);
      p += 3 + (type === 1 ? 1 : size);
      if (p > src.size) fail(`frame at ${off} runs past the end of the file (truncated)`);
    }
    if (h.checksum) p += 4;
    if (p > src.size) fail(`frame at ${off} runs past the end of the file (truncated)`);
    all.push({ coff: off, csize: p - off });
    if (h.contentSize === null) why ??= `frame at ${off} does not record its decompressed size`;
    else if (h.contentSize > maxFrame) why ??= `frame at ${off} is ${h.contentSize} bytes decompressed, more than zstd-max-block (${maxFrame})`;
    else {
      frames.push({ coff: off, csize: p - off, uoff, usize: h.contentSize });
      uoff += h.contentSize;
    }
    off = p;
  }
  if (why) return { kind: "stream", why, frames: all };
  return { kind: "frames", frames };
}

export async function readZstdIndex(src: Source, maxFrame: number): Promise<ZstdIndex> {
  if (src.size < 4) fail(`not a zstd file (only ${src.size} bytes)`);
  if (src.size >= 17 && (await src.read(src.size - 4, 4, "the end of the file")).readUInt32LE(0) === SEEKABLE_MAGIC) {
    const idx = await seekTable(src);
    for (const f of idx.kind === "seekable" ? idx.frames : []) {
      if (f.usize > maxFrame) fail(`frame at ${f.coff} is ${f.usize} bytes decompressed, more than zstd-max-block (${maxFrame})`);
    }
    return idx;
  }
  return walkFrames(src, maxFrame);
}

/** The length of the zstd frame at the start of buf (header, blocks, checksum), from its block headers. */
export function frameLength(buf: Buffer): number {
  if (buf.length < 4 || buf.readUInt32LE(0) !== ZSTD_MAGIC) fail("no zstd frame");
  const h = frameHeader(buf.subarray(0, Math.min(18, buf.length)), 0);
  let p = h.length;
  for (let last = 0; !last; ) {
    if (p + 3 > buf.length) fail("truncated frame");
    const bh = buf.readUIntLE(p, 3);
    last = bh & 1;
    const type = (bh >> 1) & 3;
    if (type === 3) fail("reserved block type");
    p += 3 + (type === 1 ? 1 : bh >>> 3);
  }
  p += h.checksum ? 4 : 0;
  if (p > buf.length) fail("truncated frame");
  return p;
}
