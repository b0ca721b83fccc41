// Reading the compressed bytes of the layer below. Every read is checked
// against the size below, so a corrupt header pointing past the end is a
// clear "truncated" error, never a request beyond the export below.

import type { Context } from "../../../backend/types.js";

/** A format error in the data below: the message names the filter and what is wrong. */
export class DecodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DecodeError";
  }
}

/** The data below, read-only, with its size fixed when the image is opened. */
export class Source {
  constructor(
    readonly ctx: Context,
    readonly size: number,
    private readonly what: string,
  ) {}

  static async open(ctx: Context, what: string): Promise<Source> {
    return new Source(ctx, await ctx.getSize(), what);
  }

  /** `length` bytes at `offset`, or a DecodeError if they are not all there. */
  async read(offset: number, length: number, why = "data"): Promise<Buffer> {
    // Checked before allocating: a corrupt length must not cost memory.
    this.check(offset, length, why);
    const buf = Buffer.allocUnsafe(length);
    await this.readInto(buf, offset, why);
    return buf;
  }

  /** Fill buf from `offset`, or a DecodeError if the bytes are not all there. */
  private check(offset: number, length: number, why: string): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new DecodeError(`${this.what}: truncated or corrupt file: ${why} at ${offset} (+${length}) is beyond the end (${this.size} bytes)`);
    }
  }

  async readInto(buf: Buffer, offset: number, why = "data"): Promise<void> {
    const length = buf.length;
    this.check(offset, length, why);
    // Large reads in pieces: the layer below may limit a request's size.
    for (let done = 0; done < length; ) {
      const n = Math.min(length - done, 32 << 20);
      await this.ctx.pread(buf.subarray(done, done + n), offset + done, 0);
      done += n;
    }
  }

  /** The whole range [offset, end) in chunks of `chunk` bytes, in order. */
  async *chunks(offset: number, end: number, chunk = 1 << 20): AsyncGenerator<Buffer> {
    for (let p = offset; p < end; p += chunk) yield await this.read(p, Math.min(chunk, end - p));
  }
}
