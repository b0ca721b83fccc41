// A block-size parameter (cow-block-size=, dirty-block-size=): a size with
// K/M/G suffixes, a power of 2 from `min` to 2G, refused with one line that
// names the filter and the key.

import { parseSize } from "../../backend/size.js";

export function parseBlockSizeParam(filter: string, key: string, value: string, min: number): number {
  let n: number;
  try {
    n = parseSize(value);
  } catch (e) {
    throw new Error(`${filter}: ${key}: ${(e as Error).message}`);
  }
  if (n < min || n > 2 ** 31 || (n & (n - 1)) !== 0) {
    throw new Error(`${filter}: ${key} is out of range (${min}..2G) or not a power of 2: '${value}'`);
  }
  return n;
}
