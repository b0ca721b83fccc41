// Counter-based pseudo-random data: the bytes at any offset are a pure
// function of (key, offset), so any range can be produced without running
// a generator from the start, and every read of a byte gives the same
// value whatever the alignment of the request. Not cryptographic.

const TWO32 = 0x1_0000_0000;

/** A bijective 32-bit integer hash (the "lowbias32" mixer). */
export function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/** A key for one stream of data: the seed mixed with a per-use constant. */
export function streamKey(seed: number, stream: number): number {
  return mix32(mix32(seed >>> 0) ^ stream);
}

/** The key for the 2^32 words whose index has this high half. */
function highKey(key: number, hi: number): number {
  return hi === 0 ? key : mix32(key ^ mix32(hi ^ 0x9e3779b9));
}

/** Random 32-bit word number `index` (0 <= index < 2^53) of a stream. */
export function randomWord(key: number, index: number): number {
  const hi = Math.floor(index / TWO32);
  const lo = index - hi * TWO32;
  const k = highKey(key, hi);
  return mix32((mix32((lo ^ k) >>> 0) + k) >>> 0);
}

/** A uniform double in (0, 1) from words 2i and 2i+1 of a stream. */
export function randomUnit(key: number, i: number): number {
  const a = randomWord(key, 2 * i) >>> 5; // 27 bits
  const b = randomWord(key, 2 * i + 1) >>> 6; // 26 bits
  return (a * 67108864 + b + 0.5) / 9007199254740992;
}

/**
 * Fill buf with the stream's bytes for [offset, offset + buf.length): byte
 * o is byte (o mod 4) of little-endian word floor(o / 4).
 */
export function fillRandom(buf: Uint8Array, offset: number, key: number): void {
  const len = buf.length;
  let pos = 0;
  let index = Math.floor(offset / 4);
  const skip = offset - index * 4;
  if (skip !== 0) {
    const w = randomWord(key, index);
    for (let b = skip; b < 4 && pos < len; b++) buf[pos++] = (w >>> (8 * b)) & 0xff;
    index++;
  }
  const words = Math.floor((len - pos) / 4);
  if (words > 0) {
    const dv = new DataView(buf.buffer, buf.byteOffset + pos, words * 4);
    let hi = Math.floor(index / TWO32);
    let lo = index - hi * TWO32;
    let k = highKey(key, hi);
    for (let i = 0; i < words; i++) {
      dv.setUint32(i * 4, mix32((mix32((lo ^ k) >>> 0) + k) >>> 0), true);
      if (++lo === TWO32) {
        lo = 0;
        k = highKey(key, ++hi);
      }
    }
    pos += words * 4;
    index += words;
  }
  if (pos < len) {
    const w = randomWord(key, index);
    for (let b = 0; pos < len; b++) buf[pos++] = (w >>> (8 * b)) & 0xff;
  }
}
