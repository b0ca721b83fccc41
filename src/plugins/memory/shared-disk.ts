// The memory plugin's disk when connections are served from several
// threads (src/threads): one anonymous mmap(2) of the whole disk, reserved
// but not committed (MAP_NORESERVE: the kernel maps a page at its first
// write, so RSS is what was written), and a map of which 32 KiB pages hold
// data, one byte each, in a second mapping. Every thread views the same
// memory through its own ArrayBuffers (koffi.view of the address), so a
// worker thread's WRITE is the main thread's READ with no message between.
// Trim and zero of whole pages give the memory back (madvise
// MADV_DONTNEED: the pages read as zeros again).
//
// A page's place never changes (offset = address), so unlike SparseArray
// there is no page reuse to guard: a view still being written to a socket
// while its page is trimmed sends zeros or the old data, both right for a
// READ that raced the trim.

import type { Extent, ReadPiece } from "../../backend/types.js";
import { libc } from "../../sys/libc.js";
import { PAGE_SIZE } from "./sparse.js";

const HOLE_ZERO = 3;
/** Views of the data mapping are made per region (a Buffer is at most 4 GiB). */
const REGION = 2 ** 30;
const PAGES_PER_REGION = REGION / PAGE_SIZE;

const PROT_READ_WRITE = 0x1 | 0x2;
const MAP_PRIVATE_ANONYMOUS_NORESERVE = 0x02 | 0x20 | 0x4000;
const MADV_DONTNEED = 4;

/** What a thread needs to reach the same disk (structured-clonable). */
export interface SharedDiskState {
  dataAddress: bigint;
  mapAddress: bigint;
  size: number;
}

/** Why a shared disk cannot be made here ("" when it can). */
export function sharedDiskUnavailable(): string {
  const c = libc();
  if (!c) return "no libc bindings";
  return process.arch === "x64" || process.arch === "arm64" ? "" : `mmap flags unknown for ${process.arch}`;
}

export class SharedDisk {
  private readonly regions: (Buffer | undefined)[];
  /** One byte per page: 1 = holds data. */
  private readonly map: Buffer;

  private constructor(readonly state: SharedDiskState) {
    const k = libc()!.koffi;
    this.regions = new Array(Math.ceil(state.size / REGION));
    this.map = Buffer.from(k.view(state.mapAddress as never, pageCount(state.size)));
  }

  /** A new, empty disk of `size` bytes. */
  static create(size: number): SharedDisk {
    const c = libc();
    if (!c) throw new Error("memory: shared disk needs libc bindings");
    const map = (len: number): bigint => {
      const p = c.mmap(null, len, PROT_READ_WRITE, MAP_PRIVATE_ANONYMOUS_NORESERVE, -1, 0);
      const a = c.koffi.address(p) as bigint;
      if (a === 0n || a === 0xffffffffffffffffn) throw new Error(`memory: mmap of ${len} bytes failed`);
      return a;
    };
    return new SharedDisk({ dataAddress: map(Math.max(size, 1)), mapAddress: map(Math.max(pageCount(size), 1)), size });
  }

  /** The disk another thread made (its state). */
  static attach(state: SharedDiskState): SharedDisk {
    return new SharedDisk(state);
  }

  private region(r: number): Buffer {
    let b = this.regions[r];
    if (b === undefined) {
      const len = Math.min(REGION, this.state.size - r * REGION);
      const k = libc()!.koffi;
      b = this.regions[r] = Buffer.from(k.view((this.state.dataAddress + BigInt(r) * BigInt(REGION)) as never, len));
    }
    return b;
  }

  /** Pages holding data (a scan: for tests and diagnostics). */
  get allocatedPages(): number {
    let n = 0;
    const m = this.map;
    for (let i = 0; i < m.length; i++) if (m[i] !== 0) n++;
    return n;
  }

  /** Calls fn(view, at) for the pieces of [offset, offset + count), each inside one region. */
  private each(count: number, offset: number, fn: (b: Buffer, start: number, n: number, at: number) => void): void {
    let at = 0;
    while (at < count) {
      const o = offset + at;
      const r = Math.floor(o / REGION);
      const start = o - r * REGION;
      const n = Math.min(count - at, REGION - start);
      fn(this.region(r), start, n, at);
      at += n;
    }
  }

  read(buf: Buffer, offset: number): void {
    this.each(buf.length, offset, (b, start, n, at) => b.copy(buf, at, start, start + n));
  }

  readSparse(buf: Buffer, offset: number): ReadPiece[] {
    this.read(buf, offset);
    const out: ReadPiece[] = [];
    this.runs(buf.length, offset, (length, hole) => void out.push({ length, hole }));
    return out;
  }

  write(buf: Buffer, offset: number): void {
    this.each(buf.length, offset, (b, start, n, at) => buf.copy(b, start, at, at + n));
    this.mark(buf.length, offset);
  }

  private mark(count: number, offset: number): void {
    this.map.fill(1, Math.floor(offset / PAGE_SIZE), Math.ceil((offset + count) / PAGE_SIZE));
  }

  /** Runs of data and hole, in order, by the page map. */
  private runs(count: number, offset: number, emit: (length: number, hole: boolean) => void): void {
    const m = this.map;
    let pos = 0;
    let pi = Math.floor(offset / PAGE_SIZE);
    let po = offset - pi * PAGE_SIZE;
    let runHole = false;
    let runLen = 0;
    while (pos < count) {
      const n = Math.min(PAGE_SIZE - po, count - pos);
      const hole = m[pi] === 0;
      if (runLen > 0 && hole === runHole) runLen += n;
      else {
        if (runLen > 0) emit(runLen, runHole);
        runHole = hole;
        runLen = n;
      }
      pos += n;
      pi++;
      po = 0;
    }
    if (runLen > 0) emit(runLen, runHole);
  }

  /** Zero [offset, offset + count): whole pages are given back, partial ones zeroed (and freed once all zero). */
  zero(count: number, offset: number): void {
    const c = libc()!;
    let pos = 0;
    let pi = Math.floor(offset / PAGE_SIZE);
    let po = offset - pi * PAGE_SIZE;
    while (pos < count) {
      const n = Math.min(PAGE_SIZE - po, count - pos);
      if (this.map[pi] !== 0) {
        const b = this.region(Math.floor(pi / PAGES_PER_REGION));
        const start = (pi % PAGES_PER_REGION) * PAGE_SIZE;
        const page = b.subarray(start, start + PAGE_SIZE);
        if (n === PAGE_SIZE || (page.fill(0, po, po + n), isZero(page))) {
          this.map[pi] = 0;
          c.madvise(page, PAGE_SIZE, MADV_DONTNEED);
        }
      }
      pos += n;
      pi++;
      po = 0;
    }
  }

  extents(count: number, offset: number, reqOne: boolean): Extent[] {
    const out: Extent[] = [];
    try {
      this.runs(count, offset, (length, hole) => {
        out.push({ length, type: hole ? HOLE_ZERO : 0 });
        if (reqOne) throw STOP;
      });
    } catch (e) {
      if (e !== STOP) throw e;
    }
    return out;
  }

  view(count: number, offset: number, out: (Buffer | number)[]): void {
    let at = 0;
    this.runs(count, offset, (length, hole) => {
      if (hole) out.push(length);
      else this.each(length, offset + at, (b, start, n) => void out.push(b.subarray(start, start + n)));
      at += length;
    });
  }

  target(count: number, offset: number, out: Buffer[]): void {
    this.mark(count, offset);
    this.each(count, offset, (b, start, n) => void out.push(b.subarray(start, start + n)));
  }

  /** Marked again once the payload is in: a trim that raced it leaves the data findable. */
  written(count: number, offset: number): void {
    this.mark(count, offset);
  }

  release(): void {}

  /** Everything back to zero (unload): the memory is given back, the mapping kept for other threads. */
  clear(): void {
    const c = libc()!;
    for (let r = 0; r < this.regions.length; r++) {
      const b = this.region(r);
      c.madvise(b, b.length, MADV_DONTNEED);
    }
    this.map.fill(0);
  }
}

const STOP = Symbol("stop");

function pageCount(size: number): number {
  return Math.ceil(size / PAGE_SIZE);
}

const ZERO_PAGE = Buffer.alloc(PAGE_SIZE);
function isZero(b: Buffer): boolean {
  return b.equals(ZERO_PAGE);
}
