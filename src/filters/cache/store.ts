// The block cache of one export: blocks of blockSize bytes kept in slots
// of a temporary file, clean (same bytes as below) or dirty (written here,
// not yet below). A Map from block number to entry, whose insertion order
// is the LRU order (a block used again moves to the end), so reclaim
// evicts the least recently used blocks first.
//
// Slots of evicted blocks are reused, so the file never grows beyond the
// cache's largest size (nbdkit instead punches holes at the block's own
// offset in a sparse file). A dirty block is written back below before it
// is evicted: nbdkit 1.32 evicts dirty blocks without writing them back,
// which loses acknowledged writes in writeback mode.
//
// Every request holds the locks of the blocks it touches (BlockLocks), so
// a block is never evicted, written back or refilled under a request that
// is reading or writing it. Invariant: a clean block holds exactly the
// bytes the layer below holds.

import { FLAG_FUA, type Context, type Extent } from "../../backend/types.js";
import { BlockLocks } from "../kit/block-locks.js";
import { TempFile } from "../kit/tmpfile.js";
import { dirtyAsData } from "./dirty-status.js";

export type Mode = "writeback" | "writethrough" | "unsafe";

interface Entry {
  slot: number;
  dirty: boolean;
}

export interface Limits {
  /** Start reclaiming at this many bytes cached (Infinity: no limit). */
  high: number;
  /** Stop reclaiming below this many bytes cached. */
  low: number;
}

/** The most bytes read or written back in one request below. */
const MAX_RUN = 4 * 1024 * 1024;

export class BlockCache {
  readonly nblocks: number;
  /** Cached blocks, least recently used first. */
  private entries = new Map<number, Entry>();
  /** Block numbers of the dirty entries. */
  readonly dirty = new Set<number>();
  private freeSlots: number[] = [];
  private slots = 0;
  private readonly locks = new BlockLocks();
  private zeros: Buffer | null = null;
  private reclaimer: Promise<void> | null = null;
  private reclaiming = false;
  /** Connections using this cache now (the last one to leave writes back, in writeback mode). */
  users = 0;

  private constructor(
    readonly size: number,
    readonly bs: number,
    readonly mode: Mode,
    private readonly limits: Limits,
    private readonly file: TempFile,
  ) {
    this.nblocks = Math.ceil(size / bs);
  }

  static async create(size: number, bs: number, mode: Mode, limits: Limits): Promise<BlockCache> {
    return new BlockCache(size, bs, mode, limits, await TempFile.create("cache"));
  }

  close(): Promise<void> {
    return this.file.close();
  }

  /** Number of cached blocks (for tests and debug). */
  get cachedBlocks(): number {
    return this.entries.size;
  }

  private blockLen(b: number): number {
    return Math.min(this.bs, this.size - b * this.bs);
  }

  private covers(b: number, start: number, end: number): boolean {
    const bstart = b * this.bs;
    return start <= bstart && end >= bstart + this.blockLen(b);
  }

  private touch(b: number, e: Entry): void {
    this.entries.delete(b);
    this.entries.set(b, e);
  }

  private setDirty(b: number, e: Entry, dirty: boolean): void {
    e.dirty = dirty;
    if (dirty) this.dirty.add(b);
    else this.dirty.delete(b);
  }

  /** Store a whole block (b locked, not cached): data is its blockLen(b) bytes. */
  private insert(b: number, data: Buffer, dirty: boolean): void {
    const slot = this.freeSlots.pop() ?? this.slots++;
    try {
      this.file.write(data, slot * this.bs);
    } catch (e) {
      this.freeSlots.push(slot);
      throw e;
    }
    const e: Entry = { slot, dirty: false };
    this.entries.set(b, e);
    this.setDirty(b, e, dirty);
  }

  /** Forget block b (locked); its bytes must be below already, or be meant to be lost (trim). */
  private drop(b: number, e: Entry): void {
    this.entries.delete(b);
    this.dirty.delete(b);
    this.freeSlots.push(e.slot);
  }

  private zeroBlock(): Buffer {
    return (this.zeros ??= Buffer.alloc(this.bs));
  }

  private async locked<T>(first: number, last: number, fn: () => Promise<T>): Promise<T> {
    const wait = this.locks.lock(first, last);
    try {
      if (wait) await wait;
      return await fn();
    } finally {
      this.locks.unlock(first, last);
    }
  }

  // ------------------------------------------------------------------ read

  async read(next: Context, buf: Buffer, offset: number, cacheOnRead: () => boolean): Promise<void> {
    const end = offset + buf.length;
    const first = Math.floor(offset / this.bs);
    const last = Math.floor((end - 1) / this.bs);
    await this.locked(first, last, async () => {
      const jobs: Promise<void>[] = [];
      let cor: boolean | undefined;
      let b = first;
      while (b <= last) {
        const e = this.entries.get(b);
        const bstart = b * this.bs;
        const from = Math.max(offset, bstart);
        if (e) {
          const to = Math.min(end, bstart + this.bs);
          this.touch(b, e);
          this.file.read(buf.subarray(from - offset, to - offset), e.slot * this.bs + (from - bstart));
          b++;
          continue;
        }
        let x = b + 1;
        while (x <= last && !this.entries.has(x) && (x - b) * this.bs < MAX_RUN) x++;
        const to = Math.min(end, x * this.bs);
        const piece = buf.subarray(from - offset, to - offset);
        cor ??= cacheOnRead();
        jobs.push(cor ? this.fill(next, b, x - 1, piece, from) : next.pread(piece, from, 0));
        b = x;
      }
      await Promise.all(jobs);
    });
    await this.reclaim(next);
  }

  /** Blocks [lo, hi] (locked, not cached): read whole from below, cache clean, copy out [from, ...). */
  private async fill(next: Context, lo: number, hi: number, out: Buffer | null, from: number): Promise<void> {
    const start = lo * this.bs;
    const len = Math.min((hi + 1) * this.bs, this.size) - start;
    const data = Buffer.allocUnsafe(len);
    await next.pread(data, start, 0);
    for (let b = lo; b <= hi; b++) {
      const s = (b - lo) * this.bs;
      this.insert(b, data.subarray(s, s + this.blockLen(b)), false);
    }
    if (out) data.copy(out, 0, from - start, from - start + out.length);
  }

  // ----------------------------------------------------------------- write

  /**
   * Write (data) or zero (data null) [offset, offset + count). Writethrough
   * (cache=writethrough, or FUA in writeback mode): the layer below first,
   * then the cached blocks are brought up to date. Writeback and unsafe:
   * the cache only, blocks become dirty.
   */
  async write(next: Context, data: Buffer | null, count: number, offset: number, flags: number): Promise<void> {
    const end = offset + count;
    const first = Math.floor(offset / this.bs);
    const last = Math.floor((end - 1) / this.bs);
    const through = this.mode === "writethrough" || (this.mode === "writeback" && (flags & FLAG_FUA) !== 0);
    await this.locked(first, last, async () => {
      if (through) {
        if (data) await next.pwrite(data, offset, flags);
        else await next.zero(count, offset, flags);
      }
      const jobs: Promise<void>[] = [];
      for (let b = first; b <= last; b++) jobs.push(this.writeBlock(next, b, data, offset, end, through));
      await Promise.all(jobs);
    });
    await this.reclaim(next);
  }

  /** One block of a write (locked). */
  private async writeBlock(next: Context, b: number, data: Buffer | null, offset: number, end: number, through: boolean): Promise<void> {
    const bstart = b * this.bs;
    const from = Math.max(offset, bstart);
    const to = Math.min(end, bstart + this.bs);
    const bytes = data ? data.subarray(from - offset, to - offset) : this.zeroBlock().subarray(0, to - from);
    const e = this.entries.get(b);
    if (e) {
      this.touch(b, e);
      if (through && !data && this.covers(b, offset, end)) {
        // Zeroed below as a whole: nothing worth keeping.
        this.drop(b, e);
        return;
      }
      try {
        this.file.write(bytes, e.slot * this.bs + (from - bstart));
      } catch (err) {
        // A clean block must equal what is below: forget it rather than keep it stale.
        if (!e.dirty) this.drop(b, e);
        throw err;
      }
      // Written through: clean if this request covered all of it, else as it was.
      if (!through) this.setDirty(b, e, true);
      else if (this.covers(b, offset, end)) this.setDirty(b, e, false);
      return;
    }
    if (this.covers(b, offset, end)) {
      // Zeros written through are not worth a slot; other whole blocks are cached.
      if (!(through && !data)) this.insert(b, bytes, !through);
      return;
    }
    if (through) return; // a partial block not cached: below has it, nothing to do
    // Writeback of part of a block not cached: read the rest from below.
    const blk = Buffer.allocUnsafe(this.blockLen(b));
    await next.pread(blk, bstart, 0);
    bytes.copy(blk, from - bstart);
    this.insert(b, blk, true);
  }

  /** Trim below, then forget what the trim made stale: clean blocks it touched, dirty ones it covered. */
  async trim(next: Context, count: number, offset: number, flags: number): Promise<void> {
    const end = offset + count;
    const first = Math.floor(offset / this.bs);
    const last = Math.floor((end - 1) / this.bs);
    await this.locked(first, last, async () => {
      await next.trim(count, offset, flags);
      for (let b = first; b <= last; b++) {
        const e = this.entries.get(b);
        if (e && (!e.dirty || this.covers(b, offset, end))) this.drop(b, e);
      }
    });
  }

  // ------------------------------------------------------------ write back

  /** Write every dirty block below (not flushing below). Throws the first error, after trying all. */
  async writeBack(next: Context): Promise<void> {
    const todo = [...this.dirty].sort((a, b) => a - b);
    const maxBlocks = Math.max(1, MAX_RUN / this.bs);
    let firstError: unknown;
    let i = 0;
    while (i < todo.length) {
      let j = i + 1;
      while (j < todo.length && todo[j] === todo[j - 1]! + 1 && j - i < maxBlocks) j++;
      const lo = todo[i]!;
      const hi = todo[j - 1]!;
      try {
        await this.locked(lo, hi, () => this.writeBackRun(next, lo, hi));
      } catch (e) {
        firstError ??= e;
      }
      i = j;
    }
    if (firstError !== undefined) throw firstError;
  }

  /** Blocks [lo, hi] locked: write the ones still dirty below, in contiguous pieces. */
  private async writeBackRun(next: Context, lo: number, hi: number): Promise<void> {
    let b = lo;
    while (b <= hi) {
      if (!this.dirty.has(b)) {
        b++;
        continue;
      }
      let x = b + 1;
      while (x <= hi && this.dirty.has(x)) x++;
      const start = b * this.bs;
      const data = Buffer.allocUnsafe(Math.min(x * this.bs, this.size) - start);
      for (let k = 0; k < x - b; k++) {
        const s = k * this.bs;
        this.file.read(data.subarray(s, s + this.blockLen(b + k)), this.entries.get(b + k)!.slot * this.bs);
      }
      await next.pwrite(data, start, 0);
      for (let k = b; k < x; k++) this.setDirty(k, this.entries.get(k)!, false);
      b = x;
    }
  }

  // ----------------------------------------------------------------- cache

  /** NBD_CMD_CACHE: bring [offset, offset + count), rounded out to blocks, into the cache. */
  async prefetch(next: Context, count: number, offset: number): Promise<void> {
    if (count === 0) return;
    const first = Math.floor(offset / this.bs);
    const last = Math.min(this.nblocks - 1, Math.floor((offset + count - 1) / this.bs));
    const maxBlocks = Math.max(1, MAX_RUN / this.bs);
    for (let lo = first; lo <= last; lo += maxBlocks) {
      const hi = Math.min(last, lo + maxBlocks - 1);
      await this.locked(lo, hi, async () => {
        let b = lo;
        while (b <= hi) {
          const e = this.entries.get(b);
          if (e) {
            this.touch(b, e);
            b++;
            continue;
          }
          let x = b + 1;
          while (x <= hi && !this.entries.has(x)) x++;
          await this.fill(next, b, x - 1, null, 0);
          b = x;
        }
      });
      await this.reclaim(next);
    }
  }

  // --------------------------------------------------------------- reclaim

  /**
   * Keep the cache under its limits: once it reaches the high threshold,
   * evict least recently used blocks until it is under the low one,
   * writing dirty ones back first. Blocks some request holds are skipped.
   */
  async reclaim(next: Context): Promise<void> {
    if (this.limits.high === Infinity) return;
    const bytes = () => this.entries.size * this.bs;
    if (!this.reclaiming && bytes() < this.limits.high) return;
    this.reclaiming = true;
    if (this.reclaimer) {
      // Someone is at it already; wait only when the cache is over its limit.
      if (bytes() >= this.limits.high) await this.reclaimer;
      return;
    }
    // Started on the next microtask, so that this.reclaimer is set before it can finish.
    const run = async () => {
      try {
        while (bytes() >= this.limits.low) {
          let evicted = false;
          for (const [b, e] of this.entries) {
            if (bytes() < this.limits.low) break;
            if (!this.locks.tryLock(b, b)) continue;
            try {
              if (e.dirty) await this.writeBackRun(next, b, b);
              this.drop(b, e);
              evicted = true;
            } catch {
              // Cannot write it back now: keep it (dirty), try the next one.
            } finally {
              this.locks.unlock(b, b);
            }
          }
          if (!evicted) break; // everything is busy or cannot be written back
        }
      } finally {
        if (bytes() < this.limits.low) this.reclaiming = false;
        this.reclaimer = null;
      }
    };
    this.reclaimer = Promise.resolve().then(run);
    await this.reclaimer;
  }

  // ---------------------------------------------------------- block status

  /** Block status from below, with dirty blocks reported as data (below does not have their bytes yet). */
  async extents(next: Context, count: number, offset: number, flags: number): Promise<Extent[]> {
    const ext = await next.extents(count, offset, flags);
    return this.dirty.size === 0 ? ext : dirtyAsData(ext, offset, this.dirty, this.bs);
  }
}
