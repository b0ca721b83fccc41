// Parsing of human-readable sizes ("1M", "2G", "512s"), as nbdkit_parse_size.

const SCALE: Record<string, number> = {
  "": 1,
  b: 1,
  s: 512,
  k: 2 ** 10,
  m: 2 ** 20,
  g: 2 ** 30,
  t: 2 ** 40,
  p: 2 ** 50,
  e: 2 ** 60,
};

/**
 * Parse a size: decimal digits optionally followed by one suffix letter,
 * upper or lower case: K M G T P E (powers of 1024), b (bytes) or s (512-byte
 * sectors). Throws an Error naming the bad input. The result must be an exact
 * JavaScript integer (at most 2^53-1), since offsets are Numbers.
 */
export function parseSize(s: string): number {
  const str = String(s);
  const m = /^\s*\+?([0-9]+)([a-zA-Z]?)$/.exec(str);
  if (!m) {
    if (/^\s*-\s*[0-9]/.test(str)) throw new Error(`size cannot be negative: '${str}'`);
    if (/^\s*\+?[0-9]+/.test(str)) throw new Error(`could not parse size '${str}': unknown suffix`);
    throw new Error(`could not parse size string '${str}'`);
  }
  const scale = SCALE[m[2]!.toLowerCase()];
  if (scale === undefined) throw new Error(`could not parse size '${str}': unknown suffix '${m[2]}'`);
  const n = BigInt(m[1]!) * BigInt(scale);
  if (n > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new Error(`size '${str}' is too large (maximum ${Number.MAX_SAFE_INTEGER} bytes)`);
  }
  return Number(n);
}

/** Parse a boolean as nbdkit_parse_bool: 1/true/yes/on, 0/false/no/off (any case). */
export function parseBool(s: string): boolean {
  const v = String(s).trim().toLowerCase();
  if (v === "1" || v === "true" || v === "yes" || v === "on") return true;
  if (v === "0" || v === "false" || v === "no" || v === "off") return false;
  throw new Error(`could not decipher boolean (use true/false, yes/no, on/off, 1/0): '${s}'`);
}
