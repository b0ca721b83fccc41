// Incoming bytes of one socket: a queue of chunks, read either by awaiting
// an exact count (negotiation) or synchronously (transmission hot path).
// Slices are views into the socket's chunks when they fit in one chunk:
// no copy for the common case of a request and its payload in one read.

import { objectArray } from "./object-array.js";

const EMPTY = Buffer.alloc(0);

export class ByteQueue {
  private chunks: Buffer[] = objectArray();
  private head = 0; // offset into chunks[0]
  length = 0;
  ended = false;
  private waiter: (() => void) | null = null;

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.length += chunk.length;
    this.wake();
  }

  /** Whether a queued chunk is a view of this storage. */
  holds(storage: ArrayBufferLike): boolean {
    for (const c of this.chunks) if (c.buffer === storage) return true;
    return false;
  }

  /** Throw away everything buffered (STARTTLS: bytes sent before the upgrade). */
  clear(): void {
    this.chunks.length = 0;
    this.head = 0;
    this.length = 0;
  }

  end(): void {
    this.ended = true;
    this.wake();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  /** Wait for n bytes and take them; rejects with EOF if the socket ends first. */
  async read(n: number): Promise<Buffer> {
    while (this.length < n) {
      if (this.ended) throw new EofError();
      await new Promise<void>((r) => (this.waiter = r));
    }
    return this.take(n);
  }

  /** Wait for and drop n bytes, without holding them in memory. */
  async skip(n: number): Promise<void> {
    while (n > 0) {
      if (this.length === 0) {
        if (this.ended) throw new EofError();
        await new Promise<void>((r) => (this.waiter = r));
        continue;
      }
      const k = Math.min(n, this.length);
      this.drop(k);
      n -= k;
    }
  }

  /** The big-endian 32-bit word at position i from the read position. */
  u32(i: number): number {
    const c = this.chunks[0]!;
    const p = this.head + i;
    if (p + 4 <= c.length) return c.readUInt32BE(p);
    return this.peek(i, 4).readUInt32BE(0);
  }

  /** The chunk holding the read position (read in place at firstAt when contiguous() says so). */
  get firstChunk(): Buffer {
    return this.chunks[0]!;
  }

  /** The read position's offset in firstChunk. */
  get firstAt(): number {
    return this.head;
  }

  /** True when the n bytes at the read position sit in one chunk (peek gives a view). */
  contiguous(n: number): boolean {
    return this.chunks.length > 0 && this.head + n <= this.chunks[0]!.length;
  }

  /** A view of n bytes at position i (copied, into alloc(n), only if they span chunks). */
  peek(i: number, n: number, alloc: (n: number) => Buffer = Buffer.allocUnsafe): Buffer {
    if (n === 0) return EMPTY;
    const c = this.chunks[0]!;
    const p = this.head + i;
    if (p + n <= c.length) return c.subarray(p, p + n);
    const out = alloc(n);
    let ci = 0;
    let off = this.head;
    let skip = i;
    // find the chunk holding position i
    while (skip >= this.chunks[ci]!.length - off) {
      skip -= this.chunks[ci]!.length - off;
      ci++;
      off = 0;
    }
    let pos = 0;
    off += skip;
    while (pos < n) {
      const ch = this.chunks[ci++]!;
      const k = Math.min(n - pos, ch.length - off);
      ch.copy(out, pos, off, off + k);
      pos += k;
      off = 0;
    }
    return out;
  }

  /** The read position is the first byte of b (the queue's first chunk is a view of b from its start). */
  startsWith(b: Buffer): boolean {
    const c = this.chunks[0];
    return c !== undefined && this.head === 0 && c.buffer === b.buffer && c.byteOffset === b.byteOffset;
  }

  /** Copy n bytes at position i into out (from its start). */
  copyTo(out: Buffer, i: number, n: number): void {
    if (n === 0) return;
    const b = this.peek(i, n, () => out);
    if (b !== out) b.copy(out, 0, 0, n);
  }

  take(n: number): Buffer {
    const b = this.peek(0, n);
    this.drop(n);
    return b;
  }

  drop(n: number): void {
    this.length -= n;
    while (n > 0) {
      const c = this.chunks[0]!;
      const left = c.length - this.head;
      if (n < left) {
        this.head += n;
        return;
      }
      n -= left;
      this.chunks.shift();
      this.head = 0;
    }
  }
}

export class EofError extends Error {
  constructor() {
    super("client closed the connection");
    this.name = "EofError";
  }
}
