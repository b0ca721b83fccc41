// The evil filter's corruption, bit by bit.
//
// Corrupted bits are found by jumping from one to the next with gaps drawn
// from the geometric distribution (so each bit is hit independently with
// probability p), costing one random draw per corrupted bit, not per bit.
//
// Stuck bits must be the same on every read. The disk (stuck-bits) or the
// request (stuck-wires) is cut into blocks; each block's stuck bits come
// from a generator seeded by (seed, block number), walked from the start
// of the block, so any read sees the same bits whatever its offset.

import { Random } from "../kit/random.js";

/** Bits within a block expected to be stuck; blocks are sized for this. */
const BITS_PER_BLOCK = 128;

export class Corrupter {
  /** log(1 - p), for geometric gaps; -Infinity when p = 1 (no gaps). */
  private readonly logq: number;
  /** Stuck-mode block size in bytes (a power of 2). */
  readonly blockSize: number;

  constructor(
    readonly p: number,
    readonly seed: number,
    /** Per stuck bit per read: shows its stuck value with this probability (else the true one). */
    readonly stuckP: number,
    /** Drives cosmic rays and the stuck-or-not choice of each read. */
    private readonly live: Random,
  ) {
    this.logq = Math.log1p(-Math.min(p, 1));
    const bytes = p > 0 ? BITS_PER_BLOCK / p / 8 : 1;
    this.blockSize = 2 ** Math.min(Math.max(Math.ceil(Math.log2(Math.max(bytes, 1))), 4), 40);
  }

  /** Bits to skip before the next corrupted bit. */
  private gap(r: Random): number {
    if (this.p >= 1) return 0;
    return Math.floor(Math.log1p(-r.float()) / this.logq);
  }

  /** Cosmic rays: flip each bit read with probability p. */
  flip(buf: Buffer): void {
    if (this.p <= 0) return;
    const bits = buf.length * 8;
    for (let bit = this.gap(this.live); bit < bits; bit += 1 + this.gap(this.live)) {
      buf[bit >>> 3] ^= 1 << (bit & 7);
    }
  }

  /**
   * Stuck bits of the bytes `buf` holds, `buf[0]` being byte `start` of the
   * space the bits are stuck in (the disk, or the request).
   */
  stick(buf: Buffer, start: number, salt: number): void {
    if (this.p <= 0 || buf.length === 0) return;
    const B = this.blockSize;
    const end = start + buf.length;
    for (let block = Math.floor(start / B); block * B < end; block++) {
      const base = block * B;
      const r = new Random(this.seed ^ salt, block);
      const limit = Math.min(B, end - base) * 8; // bits of this block to walk
      for (let bit = this.gap(r); bit < limit; bit += 1 + this.gap(r)) {
        const high = (r.next32() & 1) === 1; // drawn for every stuck bit, so the walk does not depend on the read
        const at = base + (bit >>> 3) - start;
        if (at < 0) continue;
        if (this.stuckP < 1 && this.live.float() >= this.stuckP) continue;
        const mask = 1 << (bit & 7);
        buf[at] = high ? buf[at]! | mask : buf[at]! & ~mask;
      }
    }
  }
}
