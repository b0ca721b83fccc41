/**
 * The content of nbdkit's (and nbdstate's) pattern plugin from `offset` for
 * `length` bytes: each 8-byte big-endian word holds its own offset.
 */
export function patternBuffer(offset: number, length: number): Buffer {
  const start = offset - (offset % 8);
  const words = Math.ceil((offset + length - start) / 8);
  const b = Buffer.alloc(words * 8);
  for (let i = 0; i < words; i++) b.writeBigUInt64BE(BigInt(start + i * 8), i * 8);
  return b.subarray(offset - start, offset - start + length);
}
