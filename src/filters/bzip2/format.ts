// bzip2 streams and blocks. A bzip2 file is one or more streams
// ("BZh" + level, blocks, end-of-stream marker + combined CRC, padding to
// a byte); blocks start at any bit and record neither their compressed
// nor their uncompressed size. So the index is built once, at open: the
// file is scanned for block magics (at every bit), and each block is
// decoded once, on its own, to learn its size and check its CRC (a magic
// inside compressed data is rare; a block that does not decode up to the
// first magic is tried up to the next ones). A read then decodes only the
// blocks it touches.
//
// A block decodes on its own as a one-block stream: "BZh" + level, the
// block's bits, an end-of-stream marker and the block's CRC as the stream
// CRC. libbzip2 (WebAssembly) checks both CRCs.

import type { BlockEntry } from "../kit/decode/image.js";
import { DecodeError, type Source } from "../kit/decode/reader.js";
import { BitWriter, EOS_HI, EOS_LO, MagicScanner, readBits, type Magic } from "./bits.js";

export interface Bz2Block extends BlockEntry {
  /** Bit offsets of the block (from its magic) and of what follows it. */
  bitStart: number;
  bitEnd: number;
  level: number;
}

/**
 * A block holds at most 100k * level bytes of run-length-encoded data; a
 * run of 4 bytes plus a count byte stands for up to 255 bytes, so a block
 * decompresses to at most 51 times that.
 */
export const maxBlockOutput = (level: number) => level * 100_000 * 51;
/** A block's compressed bits cannot span more than this (about 2.3 MB for -9): further means corrupt. */
const MAX_BLOCK_BYTES = 4 << 20;

function fail(msg: string): never {
  throw new DecodeError(`bzip2: ${msg}`);
}

/** A one-block bzip2 stream holding bits [from, to) of `bytes` (whose first bit is file bit `base`). */
export function wrapBlock(bytes: Buffer, base: number, from: number, to: number, level: number): Buffer {
  const w = new BitWriter();
  const crc = readBits(bytes, from - base + 48, 32);
  const [head, body] = w.copy(bytes, from - base, to - base);
  w.bits(EOS_HI, 16);
  w.bits(EOS_LO, 32);
  w.bits(crc, 32);
  return Buffer.concat([Buffer.from(`BZh${level}`, "latin1"), head!, body!, w.finish()]);
}

export type Decode = (stream: Buffer, size: number) => Uint8Array;

const CHUNK = 1 << 20;

export async function readBz2Index(src: Source, decode: Decode): Promise<{ blocks: Bz2Block[]; streams: number }> {
  const first = await src.read(0, Math.min(4, src.size), "the stream header");
  if (first.length < 4 || first.toString("latin1", 0, 3) !== "BZh") fail("not a bzip2 file (no BZh magic at the start)");
  // Every magic in the file, in order (bit offsets).
  const magics: Magic[] = [];
  const scanner = new MagicScanner();
  for (let p = 0; p < src.size; p += CHUNK) scanner.scan(await src.read(p, Math.min(CHUNK, src.size - p)), p * 8, magics);

  const blocks: Bz2Block[] = [];
  let streams = 0;
  let uoff = 0;
  let m = 0; // next magic to look at
  let streamStart = 0; // byte offset
  while (streamStart < src.size) {
    const h = await src.read(streamStart, Math.min(4, src.size - streamStart), "a stream header");
    if (h.length < 4 || h.toString("latin1", 0, 3) !== "BZh") {
      if (streams === 0) fail("not a bzip2 file");
      break; // trailing garbage after the last stream is ignored, as bzip2 -d does
    }
    const level = h[3]! - 0x30;
    if (level < 1 || level > 9) fail(`stream at ${streamStart}: bad block size level '${String.fromCharCode(h[3]!)}'`);
    streams++;
    let bit = (streamStart + 4) * 8;
    let combined = 0;
    for (;;) {
      while (m < magics.length && magics[m]!.bit < bit) m++;
      const here = magics[m];
      if (!here || here.bit !== bit) fail(`stream at ${streamStart}: no block or end-of-stream marker at bit ${bit} (corrupt)`);
      if (here.eos) {
        const tail = await src.read(Math.floor(bit / 8), Math.min(src.size - Math.floor(bit / 8), 11), "the end-of-stream marker");
        if ((bit % 8) + 80 > tail.length * 8) fail(`stream at ${streamStart}: truncated end-of-stream marker`);
        const crc = readBits(tail, (bit % 8) + 48, 32);
        if (crc !== combined) fail(`stream at ${streamStart}: combined CRC mismatch (corrupt)`);
        streamStart = Math.ceil((bit + 80) / 8);
        m++;
        break;
      }
      // The block ends at one of the next magics: the first one it decodes up to.
      let done: { end: number; size: number; crc: number } | null = null;
      let lastErr = "";
      for (let k = m + 1; k < Math.min(magics.length, m + 5) && !done; k++) {
        const end = magics[k]!.bit;
        const from = Math.floor(bit / 8);
        if (Math.ceil(end / 8) - from > MAX_BLOCK_BYTES) {
          lastErr ||= `no block end within ${MAX_BLOCK_BYTES} bytes`;
          break;
        }
        const bytes = await src.read(from, Math.ceil(end / 8) - from, `block at bit ${bit}`);
        try {
          const out = decode(wrapBlock(bytes, from * 8, bit, end, level), maxBlockOutput(level));
          done = { end, size: out.length, crc: readBits(bytes, bit - from * 8 + 48, 32) };
        } catch (err) {
          lastErr = (err as Error).message;
        }
      }
      if (!done) fail(`stream at ${streamStart}: block at bit ${bit} is corrupt or truncated (${lastErr || "no end marker"})`);
      blocks.push({ uoff, usize: done.size, bitStart: bit, bitEnd: done.end, level });
      uoff += done.size;
      combined = (((combined << 1) | (combined >>> 31)) ^ done.crc) >>> 0;
      bit = done.end;
    }
  }
  return { blocks, streams };
}
