// Bit-level helpers for bzip2, whose blocks start at any bit.

/** Block header magic (BCD pi) and end-of-stream magic (BCD sqrt(pi)), as 16 + 32 bits. */
export const BLOCK_HI = 0x3141;
export const BLOCK_LO = 0x59265359;
export const EOS_HI = 0x1772;
export const EOS_LO = 0x45385090;

export interface Magic {
  /** Bit offset (from the start of the scanned buffer) of the magic's first bit. */
  bit: number;
  eos: boolean;
}

/**
 * Every block and end-of-stream magic in `buf`, at any bit offset. `carry`
 * holds the last 47 bits of the previous chunk so magics that straddle
 * chunks are found; `base` is the bit offset of buf[0] in the file.
 */
export class MagicScanner {
  private hi = 0;
  private lo = 0;
  private seen = 0;

  scan(buf: Buffer, base: number, out: Magic[]): void {
    let hi = this.hi;
    let lo = this.lo;
    let seen = this.seen;
    for (let i = 0; i < buf.length; i++) {
      const byte = buf[i]!;
      for (let k = 7; k >= 0; k--) {
        hi = ((hi << 1) | (lo >>> 31)) & 0xffff;
        lo = ((lo << 1) | ((byte >> k) & 1)) >>> 0;
        if (++seen < 48) continue;
        if (lo === BLOCK_LO && hi === BLOCK_HI) out.push({ bit: base + i * 8 + (7 - k) - 47, eos: false });
        else if (lo === EOS_LO && hi === EOS_HI) out.push({ bit: base + i * 8 + (7 - k) - 47, eos: true });
      }
    }
    this.hi = hi;
    this.lo = lo;
    this.seen = seen;
  }
}

/** `n` bits (n <= 32) at bit offset `bit` of buf, as an unsigned number. */
export function readBits(buf: Buffer, bit: number, n: number): number {
  let v = 0;
  for (let i = 0; i < n; i++) {
    const b = bit + i;
    v = v * 2 + ((buf[b >> 3]! >> (7 - (b & 7))) & 1);
  }
  return v;
}

/** Appends bits to a growing byte buffer. */
export class BitWriter {
  private readonly bytes: number[] = [];
  private cur = 0;
  private n = 0;

  bits(value: number, count: number): void {
    for (let i = count - 1; i >= 0; i--) this.bit(Math.floor(value / 2 ** i) & 1);
  }

  bit(b: number): void {
    this.cur = (this.cur << 1) | b;
    if (++this.n === 8) {
      this.bytes.push(this.cur);
      this.cur = 0;
      this.n = 0;
    }
  }

  /** Bits [from, to) of src, copied bytewise when aligned (the body of a block). */
  copy(src: Buffer, from: number, to: number): Buffer[] {
    // Flush what is pending bit by bit until aligned, then shift whole bytes.
    let p = from;
    while (this.n !== 0 && p < to) this.bit((src[p >> 3]! >> (7 - (p & 7))) & 1), p++;
    const head = Buffer.from(this.bytes);
    this.bytes.length = 0;
    const whole = Math.floor((to - p) / 8);
    const body = Buffer.allocUnsafe(whole);
    const shift = p & 7;
    let k = p >> 3;
    if (shift === 0) src.copy(body, 0, k, k + whole);
    else for (let i = 0; i < whole; i++, k++) body[i] = ((src[k]! << shift) | (src[k + 1]! >> (8 - shift))) & 0xff;
    p += whole * 8;
    while (p < to) this.bit((src[p >> 3]! >> (7 - (p & 7))) & 1), p++;
    return [head, body];
  }

  /** What was written after the last copy, padded with zero bits to a byte. */
  finish(): Buffer {
    while (this.n !== 0) this.bit(0);
    return Buffer.from(this.bytes);
  }
}
