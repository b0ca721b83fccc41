// pattern plugin: a read-only disk where each 8-byte big-endian word holds
// its own offset.

import type { Plugin } from "../../backend/types.js";
import { parseSize } from "../../backend/size.js";

const TWO32 = 0x1_0000_0000;

/**
 * Fill buf with the pattern bytes of [offset, offset + buf.length): the
 * 64-bit big-endian word at every multiple of 8 is that multiple.
 * Exported for tests and for other plugins/filters that want the pattern.
 */
export function fillPattern(buf: Buffer, offset: number): void {
  const len = buf.length;
  if (len === 0) return;
  let pos = 0;
  let word = offset - (offset % 8); // offset of the word containing `offset`
  // Unaligned head: bytes from the middle of one word.
  const skip = offset - word;
  if (skip !== 0) {
    const n = Math.min(8 - skip, len);
    writeWordPart(buf, 0, word, skip, n);
    pos = n;
    word += 8;
  }
  // Aligned middle: whole words, written as two 32-bit halves.
  const whole = Math.floor((len - pos) / 8);
  if (whole > 0) {
    const dv = new DataView(buf.buffer, buf.byteOffset + pos, whole * 8);
    let hi = Math.floor(word / TWO32);
    let lo = word - hi * TWO32;
    const end = whole * 8;
    for (let i = 0; i < end; i += 8) {
      dv.setUint32(i, hi);
      dv.setUint32(i + 4, lo);
      lo += 8;
      if (lo >= TWO32) {
        lo -= TWO32;
        hi++;
      }
    }
    pos += end;
    word += end;
  }
  // Unaligned tail.
  if (pos < len) writeWordPart(buf, pos, word, 0, len - pos);
}

/** Write bytes [from, from + n) of the big-endian word `word` at buf[at]. */
function writeWordPart(buf: Buffer, at: number, word: number, from: number, n: number): void {
  const hi = Math.floor(word / TWO32);
  const lo = word - hi * TWO32;
  for (let i = 0; i < n; i++) {
    const b = from + i;
    const v = b < 4 ? hi >>> ((3 - b) * 8) : lo >>> ((7 - b) * 8);
    buf[at + i] = v & 0xff;
  }
}

export default function createPlugin(): Plugin<true> {
  let size: number | undefined;

  return {
    name: "pattern",
    version: "1.0.0",
    longname: "nbdstate pattern plugin",
    description: "A read-only test disk: each 64-bit big-endian word holds its own offset.",
    magicConfigKey: "size",
    configHelp: "size=<SIZE>          (required) Size of the virtual disk.",

    config(key, value) {
      if (key !== "size") throw new Error(`pattern: unknown parameter '${key}'`);
      try {
        size = parseSize(value);
      } catch (e) {
        throw new Error(`pattern: size: ${(e as Error).message}`);
      }
    },
    configComplete() {
      if (size === undefined) throw new Error("pattern: size parameter is required");
    },

    listExports: () => [{ name: "" }],
    defaultExport: () => "",
    open: () => true,

    getSize: () => size!,
    canWrite: () => false,
    canFlush: () => false,
    isRotational: () => false,
    canTrim: () => false,
    canZero: () => false,
    canFastZero: () => false,
    canFua: () => "none",
    canMultiConn: () => true,
    canExtents: () => false,
    canCache: () => "native",

    pread(_h, buf, offset) {
      fillPattern(buf, offset);
    },
    cache() {},
  };
}
