// XXH64 (seed 0), as zstd uses it for frame checksums and the seekable
// format for its seek table: the low 32 bits of the digest. 64-bit
// arithmetic on pairs of 32-bit halves (BigInt would be ~20x slower).

const P1H = 0x9e3779b1, P1L = 0x85ebca87;
const P2H = 0xc2b2ae3d, P2L = 0x27d4eb4f;
const P3H = 0x165667b1, P3L = 0x9e3779f9;
const P4H = 0x85ebca77, P4L = 0xc2b2ae63;
const P5H = 0x27d4eb2f, P5L = 0x165667c5;
const TWO32 = 4294967296;

// Results of the helpers below (no allocation per call).
let rh = 0;
let rl = 0;

function mul(ah: number, al: number, bh: number, bl: number): void {
  const a0 = al & 0xffff, a1 = al >>> 16, b0 = bl & 0xffff, b1 = bl >>> 16;
  const mid = a0 * b1 + a1 * b0;
  const low = a0 * b0 + (mid % 65536) * 65536;
  rl = low % TWO32;
  rh = (a1 * b1 + Math.floor(mid / 65536) + Math.floor(low / TWO32) + Math.imul(ah, bl) + Math.imul(al, bh)) >>> 0;
}

function add(ah: number, al: number, bh: number, bl: number): void {
  const l = al + bl;
  rh = (ah + bh + (l >= TWO32 ? 1 : 0)) >>> 0;
  rl = l >>> 0;
}

function rotl(h: number, l: number, r: number): void {
  rh = ((h << r) | (l >>> (32 - r))) >>> 0;
  rl = ((l << r) | (h >>> (32 - r))) >>> 0;
}

/** acc = rotl(acc + input * P2, 31) * P1 */
function round(acch: number, accl: number, ih: number, il: number): void {
  mul(ih, il, P2H, P2L);
  add(acch, accl, rh, rl);
  rotl(rh, rl, 31);
  mul(rh, rl, P1H, P1L);
}

export class Xxh64 {
  private v = new Uint32Array(8); // v1..v4 as hi, lo pairs
  private buf = Buffer.alloc(32);
  private bufLen = 0;
  private total = 0;

  constructor() {
    const v = this.v;
    add(P1H, P1L, P2H, P2L);
    v[0] = rh, v[1] = rl;
    v[2] = P2H, v[3] = P2L;
    v[4] = 0, v[5] = 0;
    // seed - P1 = two's complement of P1
    add(~P1H >>> 0, ~P1L >>> 0, 0, 1);
    v[6] = rh, v[7] = rl;
  }

  private stripe(d: Uint8Array, p: number): void {
    const v = this.v;
    for (let k = 0; k < 4; k++, p += 8) {
      const il = (d[p]! | (d[p + 1]! << 8) | (d[p + 2]! << 16) | (d[p + 3]! << 24)) >>> 0;
      const ih = (d[p + 4]! | (d[p + 5]! << 8) | (d[p + 6]! << 16) | (d[p + 7]! << 24)) >>> 0;
      round(v[2 * k]!, v[2 * k + 1]!, ih, il);
      v[2 * k] = rh;
      v[2 * k + 1] = rl;
    }
  }

  update(d: Uint8Array): this {
    this.total += d.length;
    let p = 0;
    if (this.bufLen > 0) {
      const n = Math.min(32 - this.bufLen, d.length);
      this.buf.set(d.subarray(0, n), this.bufLen);
      this.bufLen += n;
      p = n;
      if (this.bufLen < 32) return this;
      this.stripe(this.buf, 0);
      this.bufLen = 0;
    }
    for (; p + 32 <= d.length; p += 32) this.stripe(d, p);
    if (p < d.length) {
      this.buf.set(d.subarray(p), 0);
      this.bufLen = d.length - p;
    }
    return this;
  }

  /** The low 32 bits of the digest (what zstd stores). */
  digest32(): number {
    const v = this.v;
    let hh: number, hl: number;
    if (this.total >= 32) {
      rotl(v[0]!, v[1]!, 1);
      let sh = rh, sl = rl;
      for (const [k, r] of [[1, 7], [2, 12], [3, 18]] as const) {
        rotl(v[2 * k]!, v[2 * k + 1]!, r);
        add(sh, sl, rh, rl);
        sh = rh, sl = rl;
      }
      for (let k = 0; k < 4; k++) {
        round(0, 0, v[2 * k]!, v[2 * k + 1]!);
        sh = (sh ^ rh) >>> 0, sl = (sl ^ rl) >>> 0;
        mul(sh, sl, P1H, P1L);
        add(rh, rl, P4H, P4L);
        sh = rh, sl = rl;
      }
      hh = sh, hl = sl;
    } else {
      hh = P5H, hl = P5L;
    }
    add(hh, hl, Math.floor(this.total / TWO32), this.total >>> 0);
    hh = rh, hl = rl;
    const b = this.buf;
    let p = 0;
    for (; p + 8 <= this.bufLen; p += 8) {
      const il = b.readUInt32LE(p), ih = b.readUInt32LE(p + 4);
      round(0, 0, ih, il);
      hh = (hh ^ rh) >>> 0, hl = (hl ^ rl) >>> 0;
      rotl(hh, hl, 27);
      mul(rh, rl, P1H, P1L);
      add(rh, rl, P4H, P4L);
      hh = rh, hl = rl;
    }
    if (p + 4 <= this.bufLen) {
      mul(0, b.readUInt32LE(p), P1H, P1L);
      hh = (hh ^ rh) >>> 0, hl = (hl ^ rl) >>> 0;
      rotl(hh, hl, 23);
      mul(rh, rl, P2H, P2L);
      add(rh, rl, P3H, P3L);
      hh = rh, hl = rl;
      p += 4;
    }
    for (; p < this.bufLen; p++) {
      mul(0, b[p]!, P5H, P5L);
      hh = (hh ^ rh) >>> 0, hl = (hl ^ rl) >>> 0;
      rotl(hh, hl, 11);
      mul(rh, rl, P1H, P1L);
      hh = rh, hl = rl;
    }
    // Avalanche.
    hl = (hl ^ (hh >>> 1)) >>> 0; // h ^= h >> 33
    mul(hh, hl, P2H, P2L);
    hh = rh, hl = rl;
    hl = (hl ^ ((hl >>> 29) | (hh << 3))) >>> 0, hh = (hh ^ (hh >>> 29)) >>> 0; // h ^= h >> 29
    mul(hh, hl, P3H, P3L);
    hh = rh, hl = rl;
    hl = (hl ^ hh) >>> 0; // h ^= h >> 32
    return hl;
  }
}

export function xxh64low(d: Uint8Array): number {
  return new Xxh64().update(d).digest32();
}
