// A dirty bitmap: one bit per block of dirty-block-size bytes, set when a
// write, zero or trim touches any byte of the block. Bit b is bit (b & 7)
// of byte (b >> 3), as qemu's and most on-disk bitmaps order them.

import { NBD_STATE_DIRTY } from "../../protocol/constants.js";
import type { Extent } from "../../backend/types.js";

export class DirtyBitmap {
  readonly bits: Uint8Array;
  readonly nblocks: number;
  /** Set bits since the bitmap was last saved (a flush writes it only then). */
  changed = false;

  constructor(
    readonly size: number,
    readonly blockSize: number,
    bits?: Uint8Array,
  ) {
    this.nblocks = Math.ceil(size / blockSize);
    const bytes = Math.ceil(this.nblocks / 8);
    if (bits && bits.length !== bytes) throw new Error(`a bitmap of ${this.nblocks} blocks has ${bytes} bytes, not ${bits.length}`);
    this.bits = bits ?? new Uint8Array(bytes);
  }

  isDirty(b: number): boolean {
    return (this.bits[b >> 3]! & (1 << (b & 7))) !== 0;
  }

  /** Mark every block that [offset, offset + count) touches. */
  mark(offset: number, count: number): void {
    if (count <= 0) return;
    const bs = this.blockSize;
    let b = Math.floor(offset / bs);
    const last = Math.min(Math.floor((offset + count - 1) / bs), this.nblocks - 1);
    // Whole bytes in the middle at once: a large write marks thousands of blocks.
    for (; b <= last && (b & 7) !== 0; b++) this.setBit(b);
    for (; b + 7 <= last; b += 8) {
      if (this.bits[b >> 3] !== 0xff) {
        this.bits[b >> 3] = 0xff;
        this.changed = true;
      }
    }
    for (; b <= last; b++) this.setBit(b);
  }

  private setBit(b: number): void {
    const m = 1 << (b & 7);
    if ((this.bits[b >> 3]! & m) === 0) {
      this.bits[b >> 3]! |= m;
      this.changed = true;
    }
  }

  markAll(): void {
    this.mark(0, this.size);
  }

  clear(): void {
    this.bits.fill(0);
    this.changed = true;
  }

  copy(): DirtyBitmap {
    return new DirtyBitmap(this.size, this.blockSize, this.bits.slice());
  }

  /** How many blocks are dirty. */
  count(): number {
    let n = 0;
    for (let b = 0; b < this.nblocks; b++) if (this.isDirty(b)) n++;
    return n;
  }

  /**
   * Block status of [offset, offset + count) as qemu serves a dirty bitmap:
   * runs of NBD_STATE_DIRTY (1) and clean (0), the first starting at
   * offset, the last cut at the end of the request or the disk; one run
   * only if reqOne.
   */
  extents(offset: number, count: number, reqOne: boolean): Extent[] {
    const out: Extent[] = [];
    const end = Math.min(offset + count, this.size);
    const bs = this.blockSize;
    let pos = offset;
    while (pos < end) {
      const b = Math.floor(pos / bs);
      const dirty = this.isDirty(b);
      let e = b + 1;
      while (e * bs < end && this.isDirty(e) === dirty) e++;
      const runEnd = Math.min(e * bs, end);
      out.push({ length: runEnd - pos, type: dirty ? NBD_STATE_DIRTY : 0 });
      pos = runEnd;
      if (reqOne) break;
    }
    return out;
  }
}
