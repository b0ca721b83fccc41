// lzip filter: serve the uncompressed bytes of an lzip file below,
// read-only, with random access by member (the members are indexed from
// their trailers, no decoding needed). Decoded members are kept in an LRU
// of lzip-max-depth members shared by every client. Decoding is lzma1
// (pure JavaScript LZMA); the CRC32 and size of every member are checked.

import { decompress } from "lzma1";
import { parseSize } from "../../backend/size.js";
import type { Filter } from "../../backend/types.js";
import { crc32 } from "../kit/decode/crc32.js";
import { decodeFilter, parseCount, type DecodeHandle } from "../kit/decode/filter.js";
import { BlockImage } from "../kit/decode/image.js";
import { DecodeError, type Source } from "../kit/decode/reader.js";
import { readLzipIndex, type LzipMember } from "./format.js";

export const DEFAULT_MAX_BLOCK = 512 << 20;
export const DEFAULT_MAX_DEPTH = 8;

async function decodeMember(src: Source, m: LzipMember): Promise<Buffer> {
  const where = `member at ${m.coff}`;
  const raw = await src.read(m.coff, m.msize, where);
  // An .lzma ("alone") header for the member's LZMA stream: lzip's fixed
  // properties (lc=3, lp=0, pb=2), and a dictionary no larger than the data
  // (the decoder allocates all of it), with the size from the trailer.
  const alone = Buffer.alloc(13 + m.msize - 26);
  alone[0] = 0x5d;
  alone.writeUInt32LE(Math.min(m.dict, Math.max(m.usize, 4096)), 1);
  alone.writeBigUInt64LE(BigInt(m.usize), 5);
  raw.copy(alone, 13, 6, m.msize - 20);
  let out: Uint8Array;
  try {
    out = decompress(alone);
  } catch (err) {
    throw new DecodeError(`lzip: ${where}: corrupt data (${(err as Error).message})`);
  }
  if (out.length !== m.usize) throw new DecodeError(`lzip: ${where}: decodes to ${out.length} bytes, its trailer says ${m.usize}`);
  if (crc32(out) !== m.crc) throw new DecodeError(`lzip: ${where}: CRC32 mismatch`);
  return Buffer.from(out.buffer, out.byteOffset, out.length);
}

export default function createFilter(): Filter<DecodeHandle> {
  let maxBlock = DEFAULT_MAX_BLOCK;
  let maxDepth = DEFAULT_MAX_DEPTH;
  return decodeFilter({
    name: "lzip",
    description: "Serve the uncompressed contents of an lzip file (read-only), with random access by member.",
    configHelp:
      "lzip-max-block=<SIZE>  Refuse files with a member larger than SIZE uncompressed (default 512M).\n" +
      "lzip-max-depth=<N>     Keep at most N decoded members cached (default 8).",
    config(key, value) {
      if (key === "lzip-max-block") {
        try {
          maxBlock = parseSize(value);
        } catch (e) {
          throw new Error(`lzip: lzip-max-block: ${(e as Error).message}`);
        }
        if (maxBlock < 1) throw new Error("lzip: lzip-max-block must be at least 1 byte");
        return true;
      }
      if (key === "lzip-max-depth") {
        maxDepth = parseCount("lzip", key, value);
        return true;
      }
      return false;
    },
    async openImage(src) {
      const members = await readLzipIndex(src, maxBlock);
      return new BlockImage(members, (m) => decodeMember(src, m), maxDepth, `${members.length} member(s), LRU of ${maxDepth} members`, "lzip");
    },
  });
}
