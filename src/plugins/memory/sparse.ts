// A sparse byte array: fixed-size pages in a Map, allocated on write, freed
// when zeroed or trimmed. Unallocated pages read as zeros.

import type { Extent } from "../../backend/types.js";

export const PAGE_SIZE = 32768;
const ZERO_PAGE = Buffer.alloc(PAGE_SIZE);
const HOLE_ZERO = 3; // NBD_STATE_HOLE | NBD_STATE_ZERO

export class SparseArray {
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
        page = Buffer.alloc(PAGE_SIZE);
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
        if (n === PAGE_SIZE) this.pages.delete(pi);
        else {
          page.fill(0, po, po + n);
          if (page.equals(ZERO_PAGE)) this.pages.delete(pi);
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
  }
}
