// Decoding one xz block with xz-embedded (WebAssembly, from the
// xz-decompress package): the block is wrapped in a one-block stream and
// decoded with a bound, so a block that decodes to more than its index
// says is cut off at once (a decompression bomb costs nothing).

import { createRequire } from "node:module";
import { DecodeError } from "../kit/decode/reader.js";

type XzStreamCtor = new (s: ReadableStream<Uint8Array>) => ReadableStream<Uint8Array>;
const { XzReadableStream } = createRequire(import.meta.url)("xz-decompress") as { XzReadableStream: XzStreamCtor };

/** Decode a whole .xz stream that must produce exactly `size` bytes. */
export async function decodeXz(stream: Buffer, size: number, where: string): Promise<Buffer> {
  const out = Buffer.allocUnsafe(size);
  let done = 0;
  const input = new Blob([stream]).stream();
  const reader = new XzReadableStream(input).getReader();
  try {
    for (;;) {
      const { done: end, value } = await reader.read();
      if (end) break;
      if (done + value.length > size) {
        await reader.cancel().catch(() => {});
        throw new DecodeError(`xz: ${where}: decodes to more than the ${size} bytes its index says`);
      }
      out.set(value, done);
      done += value.length;
    }
  } catch (err) {
    if (err instanceof DecodeError) throw err;
    throw new DecodeError(`xz: ${where}: corrupt data (${(err as Error).message})`);
  }
  if (done !== size) throw new DecodeError(`xz: ${where}: decodes to ${done} bytes, its index says ${size}`);
  return out;
}
