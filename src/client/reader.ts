// Socket input buffering: a chunk queue (no quadratic copying) and a reader
// that serves either awaited reads (handshake, options) or a synchronous
// push parser (transmission).

import type { Duplex } from "node:stream";
import { NbdDisconnectedError } from "./errors.js";

const EMPTY = Buffer.alloc(0);

/** FIFO of received chunks; take(n) slices without copying when it can. */
export class ByteQueue {
  private chunks: Buffer[] = [];
  private head = 0; // index of the first live chunk
  private off = 0; // bytes already consumed from chunks[head]
  length = 0;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** Big-endian uint32 at byte pos (pos + 4 <= length). */
  peekUInt32(pos: number): number {
    const c = this.chunks[this.head];
    if (c.length - this.off >= pos + 4) return c.readUInt32BE(this.off + pos);
    return this.peek(pos + 4).readUInt32BE(pos);
  }

  /** The first n bytes without consuming them (a copy only if they span chunks). */
  peek(n: number): Buffer {
    const c = this.chunks[this.head];
    if (c.length - this.off >= n) return c.subarray(this.off, this.off + n);
    const out = Buffer.allocUnsafe(n);
    let got = 0;
    for (let i = this.head, o = this.off; got < n; i++, o = 0) {
      got += this.chunks[i].copy(out, got, o, Math.min(this.chunks[i].length, o + n - got));
    }
    return out;
  }

  /** Consume and return n bytes (n <= length). */
  take(n: number): Buffer {
    if (n === 0) return EMPTY;
    const c = this.chunks[this.head];
    if (c.length - this.off >= n) {
      const out = c.subarray(this.off, this.off + n);
      this.advance(n);
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let got = 0;
    while (got < n) {
      const cur = this.chunks[this.head];
      const k = Math.min(cur.length - this.off, n - got);
      cur.copy(out, got, this.off, this.off + k);
      got += k;
      this.advance(k);
    }
    return out;
  }

  /** Drop n bytes (n <= length). */
  skip(n: number): void {
    while (n > 0) {
      const k = Math.min(this.chunks[this.head].length - this.off, n);
      this.advance(k);
      n -= k;
    }
  }

  private advance(k: number): void {
    this.off += k;
    this.length -= k;
    if (this.off === this.chunks[this.head].length) {
      this.off = 0;
      this.head++;
      if (this.head === this.chunks.length) {
        this.chunks.length = 0;
        this.head = 0;
      } else if (this.head > 64 && this.head * 2 > this.chunks.length) {
        this.chunks = this.chunks.slice(this.head);
        this.head = 0;
      }
    }
  }
}

/**
 * Owns a stream's input. Without a sink, read(n) resolves once n bytes have
 * arrived (one read at a time). With a sink, every chunk is queued and the
 * sink parses what it can synchronously.
 */
export class StreamReader {
  readonly queue = new ByteQueue();
  /** Set once the stream has ended, closed or failed. */
  closedError?: Error;
  private waiter?: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void };
  private sink?: () => void;

  constructor(
    stream: Duplex,
    private readonly onClose: (err: Error) => void,
  ) {
    stream.on("data", (chunk: Buffer) => {
      this.queue.push(chunk);
      if (this.sink) this.sink();
      else this.wake();
    });
    const closed = (err?: Error) => {
      if (this.closedError) return;
      this.closedError =
        err instanceof Error
          ? new NbdDisconnectedError(`NBD connection failed: ${err.message}`, { cause: err })
          : new NbdDisconnectedError("NBD server closed the connection");
      const w = this.waiter;
      this.waiter = undefined;
      w?.reject(this.closedError);
      this.onClose(this.closedError);
    };
    stream.on("error", closed);
    stream.on("end", () => closed());
    stream.on("close", () => closed());
  }

  /** Resolve with exactly n bytes (pull mode only). */
  read(n: number): Promise<Buffer> {
    if (this.waiter) return Promise.reject(new Error("StreamReader: concurrent read"));
    if (this.sink) return Promise.reject(new Error("StreamReader: read() while a reply parser is attached"));
    if (this.queue.length >= n) return Promise.resolve(this.queue.take(n));
    if (this.closedError) return Promise.reject(this.closedError);
    return new Promise((resolve, reject) => {
      this.waiter = { n, resolve, reject };
    });
  }

  /** Attach (or with undefined, detach) a push parser; runs it once on buffered bytes. */
  setSink(sink: (() => void) | undefined): void {
    this.sink = sink;
    if (sink && this.queue.length > 0) sink();
    else if (!sink) this.wake();
  }

  private wake(): void {
    const w = this.waiter;
    if (w && this.queue.length >= w.n) {
      this.waiter = undefined;
      w.resolve(this.queue.take(w.n));
    }
  }
}
