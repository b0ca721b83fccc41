// zstd filter: serve the uncompressed bytes of a zstd file below,
// read-only. A file in the seekable format (a seek table at the end) or
// made of frames that record their decompressed size is served with random
// access by frame: a read decodes only the frames it touches, kept in an
// LRU of zstd-max-depth frames shared by every client. Any other zstd file
// (a frame without its size, as `zstd` writes from a pipe) is decompressed
// once, whole, into a hidden temporary file in $TMPDIR (default /var/tmp).
// Decoding is fzstd (pure JavaScript).

import { decompress, Decompress } from "fzstd";
import { parseSize } from "../../backend/size.js";
import type { Filter } from "../../backend/types.js";
import { decodeFilter, parseCount, type DecodeHandle } from "../kit/decode/filter.js";
import { BlockImage, TempFileImage } from "../kit/decode/image.js";
import { DecodeError, type Source } from "../kit/decode/reader.js";
import { TempFile } from "../kit/decode/tempfile.js";
import { frameHeader, readZstdIndex, type WalkedFrame, type ZstdFrame } from "./format.js";
import { Xxh64, xxh64low } from "./xxh64.js";

export const DEFAULT_MAX_BLOCK = 64 << 20;
export const DEFAULT_MAX_DEPTH = 8;
/** Input pushed to the streaming decoder at once (bounds the output it makes in one go). */
const PUSH = 16 << 10;

function corrupt(where: string, err: unknown): DecodeError {
  return err instanceof DecodeError ? err : new DecodeError(`zstd: ${where}: corrupt data (${(err as Error).message})`);
}

async function decodeFrame(src: Source, f: ZstdFrame): Promise<Buffer> {
  const where = `frame at ${f.coff}`;
  const raw = await src.read(f.coff, f.csize, where);
  const out = Buffer.alloc(f.usize);
  let got: Uint8Array;
  try {
    got = decompress(raw, out);
  } catch (err) {
    throw corrupt(where, err);
  }
  if (got.length !== f.usize) throw new DecodeError(`zstd: ${where}: decodes to ${got.length} bytes, ${f.usize} expected`);
  const data = got.buffer === out.buffer && got.byteOffset === out.byteOffset ? out : Buffer.from(got);
  // fzstd does not check checksums: the frame's own (XXH64 of its content) and the seek table's.
  if (frameHeader(raw.subarray(0, Math.min(18, raw.length)), f.coff).checksum && xxh64low(data) !== raw.readUInt32LE(raw.length - 4)) {
    throw new DecodeError(`zstd: ${where}: content checksum mismatch (corrupt)`);
  }
  if (f.tableSum !== undefined && xxh64low(data) !== f.tableSum) throw new DecodeError(`zstd: ${where}: checksum in the seek table does not match (corrupt)`);
  return data;
}

/** Every frame through the streaming decoder, in order, into a temporary file (checksums checked). */
async function decodeAll(src: Source, frames: WalkedFrame[]): Promise<TempFile> {
  const file = await TempFile.create("nbdstate-zstd");
  try {
    for (const f of frames) {
      const where = `frame at ${f.coff}`;
      const raw = await src.read(f.coff, f.csize, where);
      const sum = frameHeader(raw.subarray(0, Math.min(18, raw.length)), f.coff).checksum ? new Xxh64() : null;
      let pending: Uint8Array[] = [];
      const d = new Decompress((chunk) => {
        pending.push(chunk);
      });
      for (let p = 0; p < raw.length; p += PUSH) {
        try {
          d.push(raw.subarray(p, p + PUSH), p + PUSH >= raw.length);
        } catch (err) {
          throw corrupt(where, err);
        }
        for (const c of pending) {
          sum?.update(c);
          await file.append(c);
        }
        pending = [];
      }
      if (sum && sum.digest32() !== raw.readUInt32LE(raw.length - 4)) throw new DecodeError(`zstd: ${where}: content checksum mismatch (corrupt)`);
    }
    return file;
  } catch (err) {
    await file.close().catch(() => {});
    throw corrupt("stream", err);
  }
}

export default function createFilter(): Filter<DecodeHandle> {
  let maxBlock = DEFAULT_MAX_BLOCK;
  let maxDepth = DEFAULT_MAX_DEPTH;
  return decodeFilter({
    name: "zstd",
    description: "Serve the uncompressed contents of a zstd file (read-only), with random access by frame where possible.",
    configHelp:
      "zstd-max-block=<SIZE>  Frames larger than SIZE are not cached one by one (default 64M).\n" +
      "zstd-max-depth=<N>     Keep at most N decoded frames cached (default 8).",
    config(key, value) {
      if (key === "zstd-max-block") {
        try {
          maxBlock = parseSize(value);
        } catch (e) {
          throw new Error(`zstd: zstd-max-block: ${(e as Error).message}`);
        }
        if (maxBlock < 1) throw new Error("zstd: zstd-max-block must be at least 1 byte");
        return true;
      }
      if (key === "zstd-max-depth") {
        maxDepth = parseCount("zstd", key, value);
        return true;
      }
      return false;
    },
    async openImage(src, debug) {
      const idx = await readZstdIndex(src, maxBlock);
      if (idx.kind === "stream") {
        debug(`${idx.why}: decompressing the whole file into a temporary file`);
        return new TempFileImage(await decodeAll(src, idx.frames), `decompressed into a temporary file (${idx.why})`);
      }
      const what = idx.kind === "seekable" ? "seekable format" : "frames with their sizes";
      const summary = `${what}, ${idx.frames.length} frame(s), LRU of ${maxDepth} frames`;
      return new BlockImage(idx.frames, (f) => decodeFrame(src, f), maxDepth, summary, "zstd");
    },
  });
}
