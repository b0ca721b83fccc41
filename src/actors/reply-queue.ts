// Replies of one connection on their way to the socket. Small replies
// (headers, status chunks, errors) are written in place into an arena, one
// after another; large ones (read data) are queued as their own buffers.
// Every reply finished in one turn of the event loop leaves in one writev:
// the queue is flushed from setImmediate, after every completion of that
// turn has run. An arena is reused once every write that covers it is done.
//
// On a plain socket whose stream has nothing pending, a flush is one
// write(2)/writev(2) of the socket's fd: Node's Writable path (write, the
// write request, its callback on the next tick) was half the CPU of a
// reply, and a reply is all a WRITE costs besides its payload's read.
// What the kernel does not take goes through the stream as before, and
// every later flush with it until the stream has written it all.

import { writeSync, writevSync } from "node:fs";
import type { Duplex } from "node:stream";
import { objectArray } from "./object-array.js";

const ARENA = 64 * 1024;
/** A connection's first arena: an idle connection (most of a thousand) holds only this. */
const FIRST_ARENA = 4 * 1024;
const MAX_FREE_ARENAS = 4;

interface Arena {
  buf: Buffer;
  /** Writes still using it. */
  writing: number;
  /** No longer written into: free once `writing` is 0. */
  retired: boolean;
}

interface Part {
  buf: Buffer;
  /** Runs once the socket no longer needs buf. */
  done: (() => void) | undefined;
  /** Bytes of this arena (no closure per flush): its write count drops once written. */
  arena: Arena | null;
}

export class ReplyQueue {
  private parts: Part[] = objectArray();
  /** The other parts array: flush swaps them (no array per flush); null while a flush uses it. */
  private spare: Part[] | null = objectArray();
  private arena: Arena;
  /** Start of the bytes of the current arena not yet queued as a part. */
  private start = 0;
  private used = 0;
  private free: Buffer[] = objectArray();
  private scheduled = false;
  private closed = false;
  /** Bytes queued here and not yet handed to the socket. */
  pendingBytes = 0;
  /** Called after each flush (back-pressure and drain checks). */
  onFlush: (() => void) | null = null;
  /** A flush's buffers for writev, reused. */
  private readonly iov: Buffer[] = objectArray();

  constructor(
    private readonly socket: Duplex,
    /** The socket's fd when replies may be written to it directly (a plain socket), else -1. */
    private readonly fd = -1,
  ) {
    this.arena = { buf: Buffer.allocUnsafe(FIRST_ARENA), writing: 0, retired: false };
  }

  /** n bytes (at most 64 KiB) to write one small reply into, in place; it is queued with them. */
  reserve(n: number): { buf: Buffer; pos: number } {
    if (this.used + n > this.arena.buf.length) {
      this.seal();
      this.retire(n);
    }
    const pos = this.used;
    this.used += n;
    this.pendingBytes += n;
    this.schedule();
    return { buf: this.arena.buf, pos };
  }

  /** Room for one reply of any size: in the arena when small, else a buffer of its own. */
  reserveAny(n: number): { buf: Buffer; pos: number } {
    if (n <= ARENA / 4) return this.reserve(n);
    const buf = Buffer.allocUnsafe(n);
    this.push(buf);
    return { buf, pos: 0 };
  }

  /** Queue a buffer as it is; `done` runs once the socket no longer needs it. */
  push(buf: Buffer, done?: () => void): void {
    this.seal();
    this.parts.push({ buf, done, arena: null });
    this.pendingBytes += buf.length;
    this.schedule();
  }

  /** Nothing is queued here (the socket may still be writing). */
  get idle(): boolean {
    return this.parts.length === 0 && this.used === this.start;
  }

  /** Write what is queued now. */
  flush(): void {
    this.scheduled = false;
    this.seal();
    const parts = this.parts;
    if (parts.length === 0) return;
    // Parts queued while these are written (a done callback may queue
    // more) go to the other array; this one is emptied for the next flush.
    this.parts = this.spare ?? objectArray();
    this.spare = null;
    this.pendingBytes = 0;
    if (this.closed) {
      for (const p of parts) this.written(p);
    } else {
      const s = this.socket;
      // Only with nothing pending in the stream: bytes written past it would overtake its own.
      const at = this.fd >= 0 && s.writableLength === 0 && !s.writableEnded && !s.destroyed ? this.writeDirect(parts) : 0;
      if (parts.length - at === 1) this.streamWrite(parts[at]!);
      else if (at < parts.length) {
        s.cork();
        for (let i = at; i < parts.length; i++) this.streamWrite(parts[i]!);
        s.uncork();
      }
    }
    parts.length = 0;
    this.spare = parts;
    if (!this.closed) this.onFlush?.();
  }

  /**
   * One write(2) or writev(2) of the parts to the fd; parts it took whole
   * are done, the first it took in part keeps its rest. The index of the
   * first part not written. Any error (EAGAIN: the socket is full; EPIPE:
   * the client is gone) leaves them all to the stream, which reports real
   * errors its usual way.
   */
  private writeDirect(parts: Part[]): number {
    let n: number;
    try {
      if (parts.length === 1) n = writeSync(this.fd, parts[0]!.buf);
      else {
        const iov = this.iov;
        for (const p of parts) iov.push(p.buf);
        n = writevSync(this.fd, iov);
      }
    } catch {
      return 0;
    } finally {
      this.iov.length = 0;
    }
    let i = 0;
    while (i < parts.length && n >= parts[i]!.buf.length) {
      n -= parts[i]!.buf.length;
      this.written(parts[i++]!);
    }
    if (n > 0) parts[i]!.buf = parts[i]!.buf.subarray(n);
    return i;
  }

  private streamWrite(p: Part): void {
    if (p.arena) this.socket.write(p.buf, () => this.written(p));
    else this.socket.write(p.buf, p.done);
  }

  /** The socket no longer needs the part's bytes. */
  private written(p: Part): void {
    const a = p.arena;
    if (a) {
      if (--a.writing === 0 && a.retired) this.giveBack(a);
    } else p.done?.();
  }

  /**
   * Nothing more is written; buffers are given back. Replies still queued
   * go out first while the socket is there (the connection closes its
   * writing side right after: they are the last replies owed).
   */
  close(): void {
    if (!this.socket.destroyed) this.flush();
    this.closed = true;
    this.flush();
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.flush());
  }

  /** The arena bytes queued since the last part become one part. */
  private seal(): void {
    if (this.used === this.start) return;
    const a = this.arena;
    const view = a.buf.subarray(this.start, this.used);
    this.start = this.used;
    a.writing++;
    this.parts.push({ buf: view, done: undefined, arena: a });
  }

  /** Write into a fresh arena from now on; the old one is freed after its last write. */
  private retire(need: number): void {
    const a = this.arena;
    a.retired = true;
    if (a.writing === 0) this.giveBack(a);
    this.arena = this.newArena(need);
    this.start = 0;
    this.used = 0;
  }

  /** Arenas grow from FIRST_ARENA to ARENA as replies come; only full-size ones are kept for reuse. */
  private newArena(need: number): Arena {
    const grown = Math.min(ARENA, Math.max(this.arena.buf.length * 2, need));
    const buf = grown === ARENA ? (this.free.pop() ?? Buffer.allocUnsafe(ARENA)) : Buffer.allocUnsafe(grown);
    return { buf, writing: 0, retired: false };
  }

  private giveBack(a: Arena): void {
    if (a.buf.length === ARENA && this.free.length < MAX_FREE_ARENAS) this.free.push(a.buf);
  }
}
