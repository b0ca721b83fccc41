// C integer literals as nbdkit reads them (strtol with base 0): decimal,
// octal with a leading 0, hexadecimal with 0x. Unlike sscanf/strtol, a
// malformed literal is an error, never a shorter number: "08" and "0x"
// are refused, and values are exact (BigInt), so an overflow cannot wrap.

export interface ScannedInteger {
  value: bigint;
  /** Index just past the literal. */
  end: number;
}

const WS = " \t\n\f\r\v";

/** Whether s[i] is C whitespace (isspace in the C locale). */
export function isSpace(c: string | undefined): boolean {
  return c !== undefined && c !== "" && WS.includes(c);
}

/**
 * Scan an integer literal at s[i]: optional whitespace (if skipSpace),
 * an optional sign, then the digits. Returns null if no digit is there;
 * throws on a malformed literal (a prefix with no digits after it, an 8
 * or 9 in an octal number).
 */
export function scanInteger(s: string, i: number, skipSpace = false): ScannedInteger | null {
  if (skipSpace) while (isSpace(s[i])) i++;
  let negative = false;
  if (s[i] === "+" || s[i] === "-") {
    negative = s[i] === "-";
    i++;
  }
  const start = i;
  let digits: string;
  let radix: "x" | "o" | "d";
  if (s[i] === "0" && (s[i + 1] === "x" || s[i + 1] === "X")) {
    i += 2;
    const from = i;
    while (i < s.length && /[0-9a-fA-F]/.test(s[i]!)) i++;
    if (i === from) throw new Error(`'${s.slice(start, i)}' must be followed by hexadecimal digits`);
    digits = s.slice(from, i);
    radix = "x";
  } else if (s[i] === "0") {
    i++;
    const from = i;
    while (i < s.length && /[0-9]/.test(s[i]!)) i++;
    digits = s.slice(from, i);
    if (/[89]/.test(digits)) throw new Error(`'${s.slice(start, i)}' is not a valid octal number`);
    radix = "o";
  } else {
    const from = i;
    while (i < s.length && /[0-9]/.test(s[i]!)) i++;
    if (i === from) return null;
    digits = s.slice(from, i);
    radix = "d";
  }
  let value = digits === "" ? 0n : BigInt(radix === "x" ? `0x${digits}` : radix === "o" ? `0o${digits}` : digits);
  if (negative) value = -value;
  return { value, end: i };
}

/**
 * Parse a whole parameter value as an unsigned integer no larger than max,
 * as nbdkit_parse_uint8_t/uint16_t/uint32_t/uint64_t do: decimal, 0octal or
 * 0xhex, surrounding whitespace allowed, nothing else.
 */
export function parseUnsigned(what: string, value: string, max: bigint): number {
  let r: ScannedInteger | null;
  try {
    r = scanInteger(value, 0, true);
  } catch (e) {
    throw new Error(`${what}: could not parse number '${value}': ${(e as Error).message}`);
  }
  if (r === null) throw new Error(`${what}: could not parse number '${value}'`);
  let end = r.end;
  while (isSpace(value[end])) end++;
  if (end !== value.length) throw new Error(`${what}: could not parse number '${value}': trailing garbage`);
  if (r.value < 0n) throw new Error(`${what}: '${value}' cannot be negative`);
  if (r.value > max) throw new Error(`${what}: '${value}' is out of range (maximum ${max})`);
  return Number(r.value);
}
