// A shared buffer of zeros for filters that write zeroes with pwrite
// (zero emulation, reads past the end). Never written to.

export const ZERO_CHUNK = 1024 * 1024;

let zeroBuf: Buffer | null = null;

/** n (at most ZERO_CHUNK) zero bytes; callers must not modify them. */
export function zeros(n: number): Buffer {
  zeroBuf ??= Buffer.alloc(ZERO_CHUNK);
  return n === ZERO_CHUNK ? zeroBuf : zeroBuf.subarray(0, n);
}

/** Whether every byte of b is zero. */
export function isZero(b: Buffer): boolean {
  let i = 0;
  const n = b.length;
  // Compare in chunks against the zero buffer (Buffer.equals is native).
  while (i < n) {
    const k = Math.min(ZERO_CHUNK, n - i);
    if (!b.subarray(i, i + k).equals(zeros(k))) return false;
    i += k;
  }
  return true;
}
