// Sparse images for the data plugin: a SparseArray (the memory plugin's
// page map) plus a size, with the operations evaluation needs (fill, blit
// one image into another, zero without walking huge holes page by page)
// and a sparse read for preadSparse.

import { totalmem } from "node:os";
import type { ReadPiece } from "../../backend/types.js";
import { SparseArray, PAGE_SIZE } from "../memory/sparse.js";
import { DataFormatError } from "./parse.js";

export { PAGE_SIZE };

/** Building stops with an error past this much page memory (all of RAM). */
let memoryLimit = totalmem();

/** For tests: lower the memory limit; returns the previous one. */
export function setMemoryLimit(bytes: number): number {
  const old = memoryLimit;
  memoryLimit = bytes;
  return old;
}

const FILL_CHUNK = 1 << 20;
const fillChunks = new Map<number, Buffer>();

/** A 1 MiB buffer of one byte value (cached: fills reuse it). */
function fillChunk(byte: number): Buffer {
  let b = fillChunks.get(byte);
  if (!b) fillChunks.set(byte, (b = Buffer.alloc(FILL_CHUNK, byte)));
  return b;
}

const ZERO_PAGE = Buffer.alloc(PAGE_SIZE);

/** Whether b[start, end) (at most a page) is all zeros: a native compare. */
function allZero(b: Buffer, start: number, end: number): boolean {
  return b.subarray(start, end).equals(ZERO_PAGE.subarray(0, end - start));
}

export class Image {
  readonly arr = new SparseArray();
  /** The image's size: the largest offset reached while building it. */
  size = 0;

  /**
   * Write data at offset. Pages that would receive only zeros are not
   * allocated (they are zeroed instead), so allocated pages always hold
   * some nonzero byte and extents report every zero page as a hole.
   */
  write(buf: Buffer, offset: number): void {
    let pos = 0;
    while (pos < buf.length) {
      const at = offset + pos;
      const n = Math.min(PAGE_SIZE - (at % PAGE_SIZE), buf.length - pos);
      if (allZero(buf, pos, pos + n)) this.zero(n, at);
      else {
        this.arr.write(buf.subarray(pos, pos + n), at);
        this.checkMemory();
      }
      pos += n;
    }
  }

  /** Write `count` copies of one byte. */
  fill(byte: number, count: number, offset: number): void {
    if (byte === 0) return this.zero(count, offset);
    const chunk = fillChunk(byte);
    for (let pos = 0; pos < count; pos += FILL_CHUNK) {
      this.arr.write(chunk.subarray(0, Math.min(FILL_CHUNK, count - pos)), offset + pos);
      this.checkMemory();
    }
  }

  /**
   * Zero [offset, offset + count). A range far larger than the number of
   * allocated pages is handled by visiting the pages, not the range.
   */
  zero(count: number, offset: number): void {
    zeroRange(this.arr, count, offset);
  }

  /** Copy [from, from + count) of src here at offset, holes included. */
  blit(src: Image, from: number, count: number, offset: number): void {
    if (count === 0) return;
    const pages = src.arr.pages;
    if (pages.size === 0) return this.zero(count, offset);
    const first = Math.floor(from / PAGE_SIZE);
    const last = Math.floor((from + count - 1) / PAGE_SIZE);
    // Holes of src become zeroed ranges here; with few pages, walk the
    // sorted page list rather than every page index in the range.
    const indexes = last - first + 1 > pages.size ? [...pages.keys()].filter((p) => p >= first && p <= last).sort((a, b) => a - b) : null;
    let done = from; // src bytes before this are copied
    const copyPage = (pi: number, page: Buffer) => {
      const start = Math.max(from, pi * PAGE_SIZE);
      const end = Math.min(from + count, (pi + 1) * PAGE_SIZE);
      if (start > done) this.zero(start - done, offset + (done - from));
      this.arr.write(page.subarray(start - pi * PAGE_SIZE, end - pi * PAGE_SIZE), offset + (start - from));
      this.checkMemory();
      done = end;
    };
    if (indexes) for (const pi of indexes) copyPage(pi, pages.get(pi)!);
    else {
      for (let pi = first; pi <= last; pi++) {
        const page = pages.get(pi);
        if (page) copyPage(pi, page);
      }
    }
    if (done < from + count) this.zero(from + count - done, offset + (done - from));
  }

  /** [offset, offset + buf.length) of the image into buf. */
  read(buf: Buffer, offset: number): void {
    this.arr.read(buf, offset);
  }

  private checkMemory(): void {
    if (this.arr.allocatedPages * PAGE_SIZE > memoryLimit) {
      throw new DataFormatError(`the data needs more than ${memoryLimit} bytes of memory`);
    }
  }
}

/** Zero a range of a SparseArray, visiting at most the allocated pages. */
export function zeroRange(arr: SparseArray, count: number, offset: number): void {
  if (count === 0 || arr.pages.size === 0) return;
  const first = Math.floor(offset / PAGE_SIZE);
  const last = Math.floor((offset + count - 1) / PAGE_SIZE);
  if (last - first + 1 <= arr.pages.size) return arr.zero(count, offset);
  for (const pi of [...arr.pages.keys()]) {
    if (pi < first || pi > last) continue;
    const start = Math.max(offset, pi * PAGE_SIZE);
    const end = Math.min(offset + count, (pi + 1) * PAGE_SIZE);
    arr.zero(end - start, start);
  }
}

/**
 * Read [offset, offset + buf.length) as data and hole pieces: allocated
 * pages are copied, unallocated ones are holes (buf left unwritten there).
 */
export function readSparse(arr: SparseArray, buf: Buffer, offset: number): ReadPiece[] {
  const len = buf.length;
  if (arr.pages.size === 0) return len > 0 ? [{ length: len, hole: true }] : [];
  const out: ReadPiece[] = [];
  let pos = 0;
  let pi = Math.floor(offset / PAGE_SIZE);
  let po = offset - pi * PAGE_SIZE;
  while (pos < len) {
    const n = Math.min(PAGE_SIZE - po, len - pos);
    const page = arr.pages.get(pi);
    if (page) page.copy(buf, pos, po, po + n);
    const hole = page === undefined;
    const prev = out[out.length - 1];
    if (prev && prev.hole === hole) prev.length += n;
    else out.push({ length: n, hole });
    pos += n;
    pi++;
    po = 0;
  }
  return out;
}

