// gzip filter: serve the uncompressed bytes of a gzip file below,
// read-only. gzip has no index, so (as nbdkit's gzip filter) the whole
// file is decompressed once, by the first client, into a hidden temporary
// file in $TMPDIR (default /var/tmp), which then serves every client.
// Concatenated members (`cat a.gz b.gz`) decompress as one, as gunzip does.

import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import type { Filter } from "../../backend/types.js";
import { decodeFilter, type DecodeHandle } from "../kit/decode/filter.js";
import { TempFileImage } from "../kit/decode/image.js";
import { DecodeError, type Source } from "../kit/decode/reader.js";
import { TempFile } from "../kit/decode/tempfile.js";

export async function openGzip(src: Source): Promise<TempFileImage> {
  if (src.size < 18) throw new DecodeError(`gzip: not a gzip file (only ${src.size} bytes)`);
  const magic = await src.read(0, 3, "the gzip header");
  if (magic[0] !== 0x1f || magic[1] !== 0x8b) throw new DecodeError("gzip: not a gzip file (no gzip magic at the start)");
  if (magic[2] !== 8) throw new DecodeError(`gzip: unknown compression method ${magic[2]} (only deflate, 8, exists)`);
  const file = await TempFile.create("nbdstate-gzip");
  try {
    await pipeline(Readable.from(src.chunks(0, src.size)), createGunzip(), async (out: AsyncIterable<Buffer>) => {
      for await (const chunk of out) await file.append(chunk);
    });
  } catch (err) {
    await file.close().catch(() => {});
    if (err instanceof DecodeError) throw err;
    const msg = (err as Error).message;
    if (msg === "incorrect header check" && file.size > 0) {
      // Node's zlib checks every member's header: bytes after the last member that are not gzip.
      throw new DecodeError("gzip: data after the last member is not gzip (trailing garbage), refused");
    }
    throw new DecodeError(`gzip: corrupt or truncated gzip data: ${msg}`);
  }
  return new TempFileImage(file, "decompressed into a temporary file");
}

export default function createFilter(): Filter<DecodeHandle> {
  return decodeFilter({
    name: "gzip",
    description: "Serve the uncompressed contents of a gzip file (read-only).",
    configHelp: "(no parameters: the file is decompressed once into a temporary file in $TMPDIR, default /var/tmp)",
    openImage: (src) => openGzip(src),
  });
}
