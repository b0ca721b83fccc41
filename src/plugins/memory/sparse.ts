// A sparse byte array: fixed-size pages in a Map, allocated on write, freed
// when zeroed or trimmed. Unallocated pages read as zeros.

import type { Extent, ReadPiece } from "../../backend/types.js";

export const PAGE_SIZE = 32768;
const ZERO_PAGE = Buffer.alloc(PAGE_SIZE);
const HOLE_ZERO = 3; // NBD_STATE_HOLE | NBD_STATE_ZERO

/** Pages per slab: one zero-filled 1 MiB allocation is split into pages. */
const SLAB_PAGES = 32;

/**
 * Pages come from 1 MiB slabs: a large zero-filled allocation is fresh
 * memory the kernel maps on first touch, so writing 4 KiB into a new page
 * faults in 4 KiB, where a zero-filled 32 KiB allocation per page touched
 * all of it (measured here: about 5x slower for random 4k writes). Freed
 * pages are kept for reuse, zeroed again when handed out.
 */
class PagePool {
  private slab: Buffer | null = null;
  private next = 0;
  private free: Buffer[] = [];

  get(): Buffer {
    const reused = this.free.pop();
    if (reused) return reused.fill(0);
    if (this.slab === null || this.next === SLAB_PAGES) {
      this.slab = Buffer.alloc(PAGE_SIZE * SLAB_PAGES);
      this.next = 0;
    }
    const start = this.next++ * PAGE_SIZE;
    return this.slab.subarray(start, start + PAGE_SIZE);
  }

  put(page: Buffer): void {
    this.free.push(page);
  }

  clear(): void {
    this.slab = null;
    this.free = [];
  }
}

export class SparseArray {
  private pool = new PagePool();
  /**
   * Views and targets handed out (view(), target()) and not yet released.
   * While any is out a freed page is dropped, not reused: a reply still
   * being written from it, or a payload still arriving into it, must not
   * meet another offset's data there.
   */
  pins = 0;

  /** Page index -> page contents (always PAGE_SIZE bytes). */
  readonly pages = new Map<number, Buffer>();

  /** Number of allocated pages. */
  get allocatedPages(): number {
    return this.pages.size;
  }

  /** Copy [offset, offset + buf.length) into buf. */
  read(buf: Buffer, offset: number): void {
    const len = buf.length;
    let pos = 0;
    let pi = Math.floor(offset / PAGE_SIZE);
    let po = offset - pi * PAGE_SIZE;
    while (pos < len) {
      const n = Math.min(PAGE_SIZE - po, len - pos);
      const page = this.pages.get(pi);
      if (page !== undefined) page.copy(buf, pos, po, po + n);
      else buf.fill(0, pos, pos + n);
      pos += n;
      pi++;
      po = 0;
    }
  }

  /**
   * Read [offset, offset + buf.length) as data and hole pieces: pages never
   * written (or zeroed whole) are holes, their bytes in buf left unwritten.
   */
  readSparse(buf: Buffer, offset: number): ReadPiece[] {
    const len = buf.length;
    const out: ReadPiece[] = [];
    let pos = 0;
    let pi = Math.floor(offset / PAGE_SIZE);
    let po = offset - pi * PAGE_SIZE;
    while (pos < len) {
      const n = Math.min(PAGE_SIZE - po, len - pos);
      const page = this.pages.get(pi);
      if (page !== undefined) page.copy(buf, pos, po, po + n);
      const hole = page === undefined;
      const last = out[out.length - 1];
      if (last && last.hole === hole) last.length += n;
      else out.push({ length: n, hole });
      pos += n;
      pi++;
      po = 0;
    }
    return out;
  }

  /**
   * [offset, offset + count) as views of the pages themselves, appended to
   * out: Buffers for data, numbers for the lengths of holes. Pages next to
   * each other in memory (one slab, allocated in order, as a sequential
   * write leaves them) come out as one view. Pins until release().
   */
  view(count: number, offset: number, out: (Buffer | number)[]): void {
    this.pins++;
    let pos = 0;
    let pi = Math.floor(offset / PAGE_SIZE);
    let po = offset - pi * PAGE_SIZE;
    let run: Buffer | null = null; // the page of the data run being built
    let runStart = 0; // its byteOffset
    let runLen = 0;
    let hole = 0;
    while (pos < count) {
      const n = Math.min(PAGE_SIZE - po, count - pos);
      const page = this.pages.get(pi);
      if (page === undefined) {
        if (run !== null) {
          out.push(Buffer.from(run.buffer, runStart, runLen));
          run = null;
        }
        hole += n;
      } else {
        if (hole > 0) {
          out.push(hole);
          hole = 0;
        }
        const at = page.byteOffset + po;
        if (run !== null && run.buffer === page.buffer && runStart + runLen === at) runLen += n;
        else {
          if (run !== null) out.push(Buffer.from(run.buffer, runStart, runLen));
          run = page;
          runStart = at;
          runLen = n;
        }
      }
      pos += n;
      pi++;
      po = 0;
    }
    if (run !== null) out.push(Buffer.from(run.buffer, runStart, runLen));
    else if (hole > 0) out.push(hole);
  }

  /**
   * [offset, offset + count) as writable views of its pages (allocated
   * now), appended to out; adjacent pages as one view, as view() does.
   * Pins until release().
   */
  target(count: number, offset: number, out: Buffer[]): void {
    this.pins++;
    let pos = 0;
    let pi = Math.floor(offset / PAGE_SIZE);
    let po = offset - pi * PAGE_SIZE;
    let run: Buffer | null = null;
    let runStart = 0;
    let runLen = 0;
    while (pos < count) {
      const n = Math.min(PAGE_SIZE - po, count - pos);
      let page = this.pages.get(pi);
      if (page === undefined) {
        page = this.pool.get();
        this.pages.set(pi, page);
      }
      const at = page.byteOffset + po;
      if (run !== null && run.buffer === page.buffer && runStart + runLen === at) runLen += n;
      else {
        if (run !== null) out.push(Buffer.from(run.buffer, runStart, runLen));
        run = page;
        runStart = at;
        runLen = n;
      }
      pos += n;
      pi++;
      po = 0;
    }
    if (run !== null) out.push(Buffer.from(run.buffer, runStart, runLen));
  }

  /** A view() or target() is done with. */
  release(): void {
    if (this.pins > 0) this.pins--;
  }

  /** Copy buf to [offset, offset + buf.length), allocating pages. */
  write(buf: Buffer, offset: number): void {
    const len = buf.length;
    let pos = 0;
    let pi = Math.floor(offset / PAGE_SIZE);
    let po = offset - pi * PAGE_SIZE;
    while (pos < len) {
      const n = Math.min(PAGE_SIZE - po, len - pos);
      let page = this.pages.get(pi);
      if (page === undefined) {
        page = this.pool.get();
        this.pages.set(pi, page);
      }
      buf.copy(page, po, pos, pos + n);
      pos += n;
      pi++;
      po = 0;
    }
  }

  /**
   * Zero [offset, offset + count): whole pages are freed, partial pages are
   * zeroed in place and freed if they become entirely zero.
   */
  zero(count: number, offset: number): void {
    let pos = 0;
    let pi = Math.floor(offset / PAGE_SIZE);
    let po = offset - pi * PAGE_SIZE;
    while (pos < count) {
      const n = Math.min(PAGE_SIZE - po, count - pos);
      const page = this.pages.get(pi);
      if (page !== undefined) {
        if (n === PAGE_SIZE || (page.fill(0, po, po + n), page.equals(ZERO_PAGE))) {
          this.pages.delete(pi);
          if (this.pins === 0) this.pool.put(page);
        }
      }
      pos += n;
      pi++;
      po = 0;
    }
  }

  /**
   * Extents of [offset, offset + count): unallocated pages are HOLE|ZERO (3),
   * allocated pages data (0); adjacent runs of one type are merged. With
   * reqOne only the first run is returned.
   */
  extents(count: number, offset: number, reqOne: boolean): Extent[] {
    if (this.pages.size === 0) return count > 0 ? [{ length: count, type: HOLE_ZERO }] : [];
    const out: Extent[] = [];
    let pos = 0;
    let pi = Math.floor(offset / PAGE_SIZE);
    let po = offset - pi * PAGE_SIZE;
    let runType = -1;
    let runLen = 0;
    while (pos < count) {
      const n = Math.min(PAGE_SIZE - po, count - pos);
      const type = this.pages.has(pi) ? 0 : HOLE_ZERO;
      if (type === runType) runLen += n;
      else {
        if (runLen > 0) {
          out.push({ length: runLen, type: runType });
          if (reqOne) return out;
        }
        runType = type;
        runLen = n;
      }
      pos += n;
      pi++;
      po = 0;
    }
    if (runLen > 0) out.push({ length: runLen, type: runType });
    return out;
  }

  clear(): void {
    this.pages.clear();
    this.pool.clear();
  }
}
