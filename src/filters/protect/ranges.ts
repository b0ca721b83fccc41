// protect= ranges: "START-END" (inclusive), "~START-END" (everything but),
// either end may be omitted; numbers in decimal, octal (0NN) or hex (0xNN).

/** An inclusive byte range [start, end]. */
export interface Range {
  start: number;
  end: number;
  /** The protect= value it came from (for error messages). */
  text: string;
}

/** Offsets beyond this cannot occur (sizes are JavaScript integers). */
const LAST = Number.MAX_SAFE_INTEGER;

function parseOffset(s: string, text: string): number {
  let n: bigint;
  if (/^0x[0-9a-f]+$/i.test(s)) n = BigInt(s);
  else if (/^0[0-7]+$/.test(s)) n = BigInt(`0o${s.slice(1)}`);
  else if (/^[0-9]+$/.test(s)) n = BigInt(s);
  else throw new Error(`protect: cannot parse '${s}' in range '${text}' (decimal, 0NN octal or 0xNN hex)`);
  if (n >= 1n << 64n) throw new Error(`protect: '${s}' in range '${text}' is out of range`);
  return n > BigInt(LAST) ? LAST : Number(n);
}

/** The ranges one protect= value protects (a ~ range gives up to two). */
export function parseRange(text: string): Range[] {
  const negate = text.startsWith("~");
  const body = negate ? text.slice(1) : text;
  const dash = body.indexOf("-");
  if (dash < 0) throw new Error(`protect: cannot parse range, missing '-': ${text}`);
  const a = body.slice(0, dash);
  const b = body.slice(dash + 1);
  const start = a === "" ? 0 : parseOffset(a, text);
  const end = b === "" ? LAST : parseOffset(b, text);
  if (end < start) throw new Error(`protect: invalid range, end < start: ${text}`);
  if (!negate) return [{ start, end, text }];
  const out: Range[] = [];
  if (start > 0) out.push({ start: 0, end: start - 1, text });
  if (end < LAST) out.push({ start: end + 1, end: LAST, text });
  return out;
}

/** Sorted, with adjacent and overlapping ranges merged. */
export function mergeRanges(list: Range[]): Range[] {
  const sorted = [...list].sort((x, y) => x.start - y.start);
  const out: Range[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.start <= last.end + 1) {
      if (r.end > last.end) out[out.length - 1] = { start: last.start, end: r.end, text: last.text };
    } else {
      out.push({ ...r });
    }
  }
  return out;
}

/** Index of the first range ending at or after `offset` (ranges.length if none). */
export function firstFrom(ranges: Range[], offset: number): number {
  let lo = 0;
  let hi = ranges.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ranges[mid]!.end < offset) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
