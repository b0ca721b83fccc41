// A large WRITE read from the socket straight into the storage's own pages
// (DirectMemory.target): what the queue already holds of the payload is
// copied there, the socket fills the rest (SocketReader.direct), one page
// after the other, and nothing of the payload passes through an arena.
// The transmission loop (transmission.ts) decides which WRITEs go this way
// and answers them; this holds the pages while the payload arrives.

import type { DirectMemory } from "../backend/types.js";
import type { ByteQueue } from "./byte-queue.js";
import { objectArray } from "./object-array.js";
import type { SocketReader } from "./socket-reader.js";

/** The request a direct WRITE answers (one object, reused). */
export interface DirectRequest {
  cHi: number;
  cLo: number;
  offset: number;
  length: number;
}

export class DirectWrite {
  /** The pages of the payload being read (DirectMemory.target's), and which one the socket fills. */
  private readonly pages: Buffer[] = objectArray();
  private at = 0;
  /** Pages are held: release() is owed to the storage. */
  private pinned = false;
  readonly request: DirectRequest = { cHi: 0, cLo: 0, offset: 0, length: 0 };

  constructor(
    private readonly mem: DirectMemory & Required<Pick<DirectMemory, "target">>,
    private readonly reader: SocketReader,
    /** The request header's size: after a payload the next read is one header long. */
    private readonly headerSize: number,
    /** The socket filled the payload (begin() returned false): it is answered. */
    private readonly filled: () => void,
  ) {}

  /**
   * A WRITE of `length` bytes at `offset` whose header has been taken from
   * the queue: its pages are held and what the queue holds of the payload
   * is copied (and dropped). True: the payload is all in, finish() it now.
   * False: the socket fills the rest, then `filled` runs.
   */
  begin(q: ByteQueue, cHi: number, cLo: number, offset: number, length: number): boolean {
    const pages = this.pages;
    pages.length = 0;
    this.mem.target(length, offset, pages);
    this.pinned = true;
    const r = this.request;
    r.cHi = cHi;
    r.cLo = cLo;
    r.offset = offset;
    r.length = length;
    let have = Math.min(q.length, length);
    this.at = 0;
    let into = 0;
    while (have > 0) {
      const b = pages[this.at]!;
      const k = Math.min(have, b.length - into);
      q.copyTo(into === 0 && k === b.length ? b : b.subarray(into, into + k), 0, k);
      q.drop(k);
      have -= k;
      into += k;
      if (into === b.length) {
        this.at++;
        into = 0;
      }
    }
    if (this.at === pages.length) return true;
    this.fill(into);
    return false;
  }

  /** The payload is all in its pages: they are written and let go. The request it answers. */
  finish(): DirectRequest {
    const r = this.request;
    this.pinned = false;
    this.mem.written?.(r.length, r.offset);
    this.mem.release();
    return r;
  }

  /** The client is gone: a payload that was arriving never will, its pages are let go. */
  abandon(): void {
    if (!this.pinned) return;
    this.pinned = false;
    this.mem.release();
  }

  /** The socket fills pages[at...] (the first `have` bytes of it are in). */
  private fill(have: number): void {
    const pages = this.pages;
    this.reader.direct(pages[this.at]!, have, () => {
      if (++this.at < pages.length) return this.fill(0);
      // The next read is the next request's header alone: a payload after
      // it can go straight to its pages too, none of it through the arena.
      this.reader.nextReadAtMost(this.headerSize);
      this.filled();
    });
  }
}
