// xz filter: serve the uncompressed bytes of an .xz file below, read-only,
// with random access by xz block (as nbdkit's xz filter): the block map is
// read from the file's indexes, and a read decodes only the blocks it
// touches. Decoded blocks are kept in an LRU of xz-max-depth blocks shared
// by all clients of the export.

import { createHash } from "node:crypto";
import { parseSize } from "../../backend/size.js";
import type { Filter } from "../../backend/types.js";
import { decodeFilter, parseCount, type DecodeHandle } from "../kit/decode/filter.js";
import { BlockImage } from "../kit/decode/image.js";
import { DecodeError } from "../kit/decode/reader.js";
import { decodeXz } from "./decode.js";
import { checkSize, readXzIndex, wrapBlock, type XzBlock } from "./format.js";

export const DEFAULT_MAX_BLOCK = 512 << 20;
export const DEFAULT_MAX_DEPTH = 8;

export default function createFilter(): Filter<DecodeHandle> {
  let maxBlock = DEFAULT_MAX_BLOCK;
  let maxDepth = DEFAULT_MAX_DEPTH;
  return decodeFilter({
    name: "xz",
    description: "Serve the uncompressed contents of an xz file (read-only), with random access by block.",
    configHelp:
      "xz-max-block=<SIZE>  Refuse files with a block larger than SIZE (default 512M).\n" +
      "xz-max-depth=<N>     Keep at most N decoded blocks cached (default 8).",
    config(key, value) {
      if (key === "xz-max-block") {
        try {
          maxBlock = parseSize(value);
        } catch (e) {
          throw new Error(`xz: xz-max-block: ${(e as Error).message}`);
        }
        if (maxBlock < 1) throw new Error("xz: xz-max-block must be at least 1 byte");
        return true;
      }
      if (key === "xz-max-depth") {
        maxDepth = parseCount("xz", key, value);
        return true;
      }
      return false;
    },
    async openImage(src) {
      const idx = await readXzIndex(src, maxBlock);
      const decode = async (b: XzBlock) => {
        const where = `block at ${b.coff}`;
        const raw = await src.read(b.coff, (b.unpadded + 3) & ~3, where);
        const type = b.flags[1]! & 0x0f;
        // xz-embedded checks CRC32 and CRC64 itself; any other check is cut
        // off the block (decoded as check type None) and SHA-256 is checked here.
        if (type === 0 || type === 1 || type === 4) return decodeXz(wrapBlock(raw, b), b.usize, where);
        const cs = checkSize(type);
        const bare = { ...b, unpadded: b.unpadded - cs, flags: Buffer.from([0, 0]) };
        const out = await decodeXz(wrapBlock(raw.subarray(0, raw.length - cs), bare), b.usize, where);
        if (type === 10 && !createHash("sha256").update(out).digest().equals(raw.subarray(raw.length - cs))) {
          throw new DecodeError(`xz: ${where}: SHA-256 mismatch`);
        }
        return out;
      };
      const summary = `${idx.streams} stream(s), ${idx.blocks.length} block(s), LRU of ${maxDepth} blocks`;
      return new BlockImage(idx.blocks, decode, maxDepth, summary, "xz");
    },
  });
}
