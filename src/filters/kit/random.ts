// A small seeded pseudo-random generator (xoshiro128**, seeded through
// splitmix32): the same seed gives the same sequence, which is what the
// fault filters' seed parameters promise. Not for cryptography.

function splitmix32(state: { s: number }): number {
  state.s = (state.s + 0x9e3779b9) | 0;
  let z = state.s;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

export class Random {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  /** Seed from up to two 32-bit words (e.g. a seed and a block number). */
  constructor(seed: number, salt = 0) {
    const st = { s: (seed >>> 0) ^ Math.imul(salt >>> 0, 0x27d4eb2f) ^ Math.imul((salt / 0x100000000) >>> 0, 0x165667b1) };
    this.a = splitmix32(st);
    this.b = splitmix32(st);
    this.c = splitmix32(st);
    this.d = splitmix32(st) | 1; // never all zero
  }

  /** The next 32 random bits, as an unsigned integer. */
  next32(): number {
    const r = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return r;
  }

  /** A float in [0, 1) with 53 random bits. */
  float(): number {
    return ((this.next32() >>> 5) * 67108864 + (this.next32() >>> 6)) / 9007199254740992;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** A seed for when the user gave none (nbdkit seeds from the clock). */
export function randomSeed(): number {
  return (Date.now() ^ (process.pid << 16) ^ Math.floor(Math.random() * 0x100000000)) >>> 0;
}

/** Parse a 32-bit unsigned seed, as nbdkit_parse_uint32_t. */
export function parseSeed(what: string, value: string): number {
  const v = value.trim();
  if (!/^[0-9]+$/.test(v) || Number(v) > 0xffffffff) throw new Error(`${what}: could not parse number: '${value}' (0 to 4294967295)`);
  return Number(v);
}
