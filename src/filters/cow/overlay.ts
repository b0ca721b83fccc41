// The copy-on-write overlay of one export: a sparse temporary file the size
// of the export (block N at offset N * blockSize) and one state byte per
// block saying where the block's bytes are:
//
//   BELOW  not in the overlay: read from the layer below (never written)
//   DATA   in the overlay file
//   ZERO   zeroed (NO_HOLE): reads as zeros, block status "zero"
//   HOLE   trimmed, or zeroed with MAY_TRIM: reads as zeros, "hole, zero"
//
// Every request that changes blocks (write, zero, trim, and the copies
// made by cow-on-read / cow-on-cache) holds the lock of each block it
// touches, so a read-modify-write of a partial block, or a copy of a block
// from below, never overwrites bytes another request wrote meanwhile.
// Plain reads take no lock: they see either the old or the new bytes of a
// block being written, which is what NBD allows for overlapping requests.

import { FLAG_FAST_ZERO, FLAG_MAY_TRIM, NbdError, type Context, type Extent } from "../../backend/types.js";
import { NBD_ENOTSUP, NBD_STATE_HOLE, NBD_STATE_ZERO } from "../../protocol/constants.js";
import { BlockLocks } from "../kit/block-locks.js";
import { ASYNC_MIN, TempFile } from "../kit/tmpfile.js";
import { overlayStatus } from "./status.js";

/** The metadata context of how deep in the layers each block is (qemu's). */
export const ALLOCATION_DEPTH = "qemu:allocation-depth";

export const BELOW = 0;
export const DATA = 1;
export const ZERO = 2;
export const HOLE = 3;

/** What a cache request does with blocks not in the overlay. */
export type CacheMode = "ignore" | "read" | "passthrough" | "cow";

/** The longest run copied from below in one read (bounds the scratch buffer). */
const MAX_COPY = 4 * 1024 * 1024;

export class Overlay {
  readonly state: Uint8Array;
  readonly nblocks: number;
  private readonly locks = new BlockLocks();

  private constructor(
    readonly size: number,
    readonly bs: number,
    private readonly file: TempFile,
  ) {
    this.nblocks = Math.ceil(size / bs);
    this.state = new Uint8Array(this.nblocks);
  }

  static async create(size: number, bs: number): Promise<Overlay> {
    const nblocks = Math.ceil(size / bs);
    if (nblocks > 2 ** 32 - 1) throw new Error(`cow: the export is too large for cow-block-size=${bs} (${size} bytes)`);
    const file = await TempFile.create("cow");
    try {
      await file.truncate(nblocks * bs);
    } catch (e) {
      await file.close();
      throw new Error(`cow: cannot size the overlay file: ${(e as Error).message}`);
    }
    return new Overlay(size, bs, file);
  }

  close(): Promise<void> {
    return this.file.close();
  }

  /** Bytes of block b that are inside the export (the last block may be short). */
  private blockLen(b: number): number {
    return Math.min(this.bs, this.size - b * this.bs);
  }

  /** Whether [start, end) covers every byte of block b that is inside the export. */
  private covers(b: number, start: number, end: number): boolean {
    const bstart = b * this.bs;
    return start <= bstart && end >= bstart + this.blockLen(b);
  }

  // ------------------------------------------------------------------ read

  async read(next: Context, buf: Buffer, offset: number, copyOnRead: () => boolean): Promise<void> {
    const end = offset + buf.length;
    const bs = this.bs;
    const st = this.state;
    const last = Math.floor((end - 1) / bs);
    let b = Math.floor(offset / bs);
    let pos = offset;
    let cor: boolean | undefined;
    let one: Promise<void> | undefined;
    let many: Promise<void>[] | undefined;
    while (b <= last) {
      const s = st[b]!;
      let e = b + 1;
      while (e <= last && st[e] === s) e++;
      const runEnd = Math.min(e * bs, end);
      const piece = buf.subarray(pos - offset, runEnd - offset);
      let job: Promise<void> | undefined;
      if (s === DATA) {
        if (piece.length >= ASYNC_MIN) job = this.file.readAsync(piece, pos);
        else this.file.read(piece, pos);
      } else if (s === BELOW) {
        cor ??= copyOnRead();
        job = cor ? this.copyUp(next, b, e - 1, piece, pos) : next.pread(piece, pos, 0);
      } else piece.fill(0);
      if (job) {
        if (one === undefined) one = job;
        else (many ??= [one]).push(job);
      }
      pos = runEnd;
      b = e;
    }
    if (many) await Promise.all(many);
    else if (one) await one;
  }

  /** cow-on-read: copy blocks [first, last] from below into the overlay, then serve piece from them. */
  private async copyUp(next: Context, first: number, last: number, piece: Buffer, pos: number): Promise<void> {
    await this.locks.with(first, last, async () => {
      const bs = this.bs;
      const end = pos + piece.length;
      const jobs: Promise<void>[] = [];
      // States may have changed while we waited: go over the run again.
      let b = first;
      while (b <= last) {
        const s = this.state[b]!;
        let e = b + 1;
        while (e <= last && this.state[e] === s && e - b < MAX_COPY / bs) e++;
        const from = Math.max(pos, b * bs);
        const to = Math.min(end, e * bs);
        const sub = piece.subarray(from - pos, to - pos);
        if (s === BELOW) jobs.push(this.copyBlocks(next, b, e - 1, sub, from));
        else if (s === DATA) this.file.read(sub, from);
        else sub.fill(0);
        b = e;
      }
      await Promise.all(jobs);
    });
  }

  /** With blocks [first, last] locked and BELOW: read them whole from below, store them, copy out [from, ...). */
  private async copyBlocks(next: Context, first: number, last: number, out: Buffer | null, from: number): Promise<void> {
    const start = first * this.bs;
    const len = Math.min((last + 1) * this.bs, this.size) - start;
    const blocks = Buffer.allocUnsafe(len);
    await next.pread(blocks, start, 0);
    this.file.write(blocks, start);
    this.state.fill(DATA, first, last + 1);
    if (out) blocks.copy(out, 0, from - start, from - start + out.length);
  }

  // ----------------------------------------------------------------- write

  async write(next: Context, buf: Buffer, offset: number): Promise<void> {
    const end = offset + buf.length;
    const first = Math.floor(offset / this.bs);
    const last = Math.floor((end - 1) / this.bs);
    const wait = this.locks.lock(first, last);
    try {
      if (wait) await wait;
      const jobs: Promise<void>[] = [];
      let lo = first;
      let hi = last;
      if (!this.covers(first, offset, end)) {
        const to = Math.min(end, first * this.bs + this.blockLen(first));
        const j = this.patch(next, first, offset, to, buf.subarray(0, to - offset));
        if (j) jobs.push(j);
        lo++;
      }
      if (hi >= lo && !this.covers(last, offset, end)) {
        const from = last * this.bs;
        const j = this.patch(next, last, from, end, buf.subarray(from - offset));
        if (j) jobs.push(j);
        hi--;
      }
      if (hi >= lo) {
        // Whole blocks: one write, straight from the client's buffer.
        const from = lo * this.bs;
        const to = Math.min((hi + 1) * this.bs, end);
        const whole = buf.subarray(from - offset, to - offset);
        if (whole.length >= ASYNC_MIN) {
          jobs.push(this.file.writeAsync(whole, from).then(() => void this.state.fill(DATA, lo, hi + 1)));
        } else {
          this.file.write(whole, from);
          this.state.fill(DATA, lo, hi + 1);
        }
      }
      await Promise.all(jobs);
    } finally {
      this.locks.unlock(first, last);
    }
  }

  /**
   * Put bytes [from, to) of block b (locked): src, or zeros when null. A
   * block already in the overlay is written in place, at once; any other is
   * built whole (its bytes from below, or zeros) and written (returns the
   * promise of that read-modify-write).
   */
  private patch(next: Context, b: number, from: number, to: number, src: Buffer | null): Promise<void> | undefined {
    const s = this.state[b]!;
    if (s === DATA) {
      this.file.write(src ?? this.zeroBytes(to - from), from);
      return undefined;
    }
    const bstart = b * this.bs;
    if (s !== BELOW) {
      const blk = Buffer.alloc(this.blockLen(b));
      if (src) src.copy(blk, from - bstart);
      this.file.write(blk, bstart);
      this.state[b] = DATA;
      return undefined;
    }
    return (async () => {
      const blk = Buffer.allocUnsafe(this.blockLen(b));
      await next.pread(blk, bstart, 0);
      if (src) src.copy(blk, from - bstart);
      else blk.fill(0, from - bstart, to - bstart);
      this.file.write(blk, bstart);
      this.state[b] = DATA;
    })();
  }

  private zeros: Buffer | null = null;

  private zeroBytes(n: number): Buffer {
    if (!this.zeros || this.zeros.length < n) this.zeros = Buffer.alloc(Math.max(n, this.bs));
    return this.zeros.subarray(0, n);
  }

  // ----------------------------------------------------------- zero, trim

  /**
   * Zero [offset, offset + count): whole blocks only change state (no I/O),
   * partial ones are patched. Trim does the same (as
   * nbdkit, trimmed bytes read back as zeros).
   */
  async zero(next: Context, count: number, offset: number, flags: number, trim = false): Promise<void> {
    const end = offset + count;
    const first = Math.floor(offset / this.bs);
    const last = Math.floor((end - 1) / this.bs);
    const wait = this.locks.lock(first, last);
    try {
      if (wait) await wait;
      let lo = first;
      let hi = last;
      const headPartial = !this.covers(first, offset, end);
      const tailPartial = last !== first && !this.covers(last, offset, end);
      if (flags & FLAG_FAST_ZERO) {
        // Fast means no read from below: refuse before changing anything.
        if ((headPartial && this.state[first] === BELOW) || (tailPartial && this.state[last] === BELOW)) {
          throw new NbdError(NBD_ENOTSUP, "cow: fast zero of a partial block not in the overlay");
        }
      }
      const jobs: Promise<void>[] = [];
      if (headPartial) {
        const j = this.patch(next, first, offset, Math.min(end, first * this.bs + this.blockLen(first)), null);
        if (j) jobs.push(j);
        lo++;
      }
      if (tailPartial) {
        const j = this.patch(next, last, last * this.bs, end, null);
        if (j) jobs.push(j);
        hi--;
      }
      if (hi >= lo) {
        const ns = trim || flags & FLAG_MAY_TRIM ? HOLE : ZERO;
        jobs.push(this.release(lo, hi));
        this.state.fill(ns, lo, hi + 1);
      }
      await Promise.all(jobs);
    } finally {
      this.locks.unlock(first, last);
    }
  }

  /**
   * Give back the file space of the DATA blocks in [lo, hi] (best effort).
   * Awaited under the blocks' lock: a later write must not be punched out.
   */
  private async release(lo: number, hi: number): Promise<void> {
    const jobs: Promise<void>[] = [];
    let b = lo;
    while (b <= hi) {
      if (this.state[b] !== DATA) {
        b++;
        continue;
      }
      let e = b + 1;
      while (e <= hi && this.state[e] === DATA) e++;
      jobs.push(this.file.discard(b * this.bs, (e - b) * this.bs));
      b = e;
    }
    await Promise.all(jobs);
  }

  // ----------------------------------------------------------------- cache

  /** NBD_CMD_CACHE over [offset, offset + count), rounded out to whole blocks. */
  async cache(next: Context, count: number, offset: number, mode: CacheMode): Promise<void> {
    if (mode === "ignore" || count === 0) return;
    const bs = this.bs;
    const first = Math.floor(offset / bs);
    const last = Math.min(this.nblocks - 1, Math.floor((offset + count - 1) / bs));
    const step = Math.max(1, MAX_COPY / bs);
    let b = first;
    while (b <= last) {
      if (this.state[b] !== BELOW) {
        b++;
        continue;
      }
      let e = b + 1;
      while (e <= last && e - b < step && this.state[e] === BELOW) e++;
      const start = b * bs;
      const len = Math.min(e * bs, this.size) - start;
      if (mode === "passthrough") await next.cache(len, start, 0);
      else if (mode === "read") await next.pread(Buffer.allocUnsafe(len), start, 0);
      else {
        const lo = b;
        const hi = e - 1;
        await this.locks.with(lo, hi, async () => {
          // Copy only what is still below once the lock is ours.
          let x = lo;
          while (x <= hi) {
            if (this.state[x] !== BELOW) {
              x++;
              continue;
            }
            let y = x + 1;
            while (y <= hi && this.state[y] === BELOW) y++;
            await this.copyBlocks(next, x, y - 1, null, 0);
            x = y;
          }
        });
      }
      b = e;
    }
  }

  // ---------------------------------------------------------- block status

  /**
   * Block status: overlay blocks by their state (DATA is data, ZERO is zero,
   * HOLE is hole+zero), the others as the layer below reports them (or data
   * when it has no block status).
   */
  extents(next: Context, count: number, offset: number, flags: number, below: boolean): Promise<Extent[]> {
    return overlayStatus(this, count, offset, flags, {
      key: (s) => s,
      own: (s) => (s === BELOW && below ? null : s === DATA || s === BELOW ? 0 : s === ZERO ? NBD_STATE_ZERO : NBD_STATE_HOLE | NBD_STATE_ZERO),
      below: (len, pos) => next.extents(len, pos, flags),
      mapBelow: (t) => t,
    });
  }

  /**
   * qemu:allocation-depth: 1 for blocks in the overlay (written, zeroed or
   * trimmed: the overlay decides what they read), and for the others what
   * the layer below says, one deeper: its own allocation depth + 1 where it
   * serves that context (0 stays 0), else 2. As qemu over a raw backing
   * file, holes below count as allocated there (qemu sets ALLOCATED for
   * anything a layer reads as data or zero): 0 appears only where a layer
   * below that knows says so.
   */
  allocationDepth(next: Context, count: number, offset: number, flags: number, belowDepth: boolean): Promise<Extent[]> {
    return overlayStatus(this, count, offset, flags, {
      key: (s) => (s === BELOW ? 0 : 1),
      own: (inOverlay) => (inOverlay ? 1 : belowDepth ? null : 2),
      below: (len, pos) => next.contextExtents(ALLOCATION_DEPTH, len, pos, flags),
      mapBelow: (t) => (t === 0 ? 0 : t + 1),
    });
  }
}
