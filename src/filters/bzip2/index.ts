// bzip2 filter: serve the uncompressed bytes of a bzip2 file below,
// read-only, with random access by bzip2 block (see ./format.ts for how the
// block map is built at open). Decoded blocks are kept in an LRU of
// bzip2-max-depth blocks shared by every client. Decoding is libbzip2
// compiled to WebAssembly (@foxglove/wasm-bz2).

import { createRequire } from "node:module";
import type { Filter } from "../../backend/types.js";
import { decodeFilter, parseCount, type DecodeHandle } from "../kit/decode/filter.js";
import { BlockImage } from "../kit/decode/image.js";
import { DecodeError } from "../kit/decode/reader.js";
import { readBz2Index, wrapBlock, type Bz2Block, type Decode } from "./format.js";

export const DEFAULT_MAX_DEPTH = 8;

interface Bzip2Wasm {
  decompress(src: Uint8Array, destSize: number, opts?: { small?: boolean }): Uint8Array;
}
const Bzip2 = createRequire(import.meta.url)("@foxglove/wasm-bz2") as { init(): Promise<Bzip2Wasm> };
let wasm: Promise<Bzip2Wasm> | undefined;

export default function createFilter(): Filter<DecodeHandle> {
  let maxDepth = DEFAULT_MAX_DEPTH;
  return decodeFilter({
    name: "bzip2",
    description: "Serve the uncompressed contents of a bzip2 file (read-only), with random access by block.",
    configHelp: "bzip2-max-depth=<N>  Keep at most N decoded blocks cached (default 8).",
    config(key, value) {
      if (key === "bzip2-max-depth") {
        maxDepth = parseCount("bzip2", key, value);
        return true;
      }
      return false;
    },
    async openImage(src) {
      const bz = await (wasm ??= Bzip2.init());
      const decode: Decode = (stream, size) => bz.decompress(stream, size);
      const idx = await readBz2Index(src, decode);
      const decodeBlock = async (b: Bz2Block) => {
        const from = Math.floor(b.bitStart / 8);
        const bytes = await src.read(from, Math.ceil(b.bitEnd / 8) - from, `block at bit ${b.bitStart}`);
        let out: Uint8Array;
        try {
          out = decode(wrapBlock(bytes, from * 8, b.bitStart, b.bitEnd, b.level), b.usize);
        } catch (err) {
          throw new DecodeError(`bzip2: block at bit ${b.bitStart}: ${(err as Error).message}`);
        }
        return Buffer.from(out.buffer, out.byteOffset, out.length);
      };
      const summary = `${idx.streams} stream(s), ${idx.blocks.length} block(s), LRU of ${maxDepth} blocks`;
      return new BlockImage(idx.blocks, decodeBlock, maxDepth, summary, "bzip2");
    },
  });
}
