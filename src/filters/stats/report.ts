// The stats filter's figures and their report, laid out as
// nbdkit-stats-filter prints them.

const KiB = 1024;
const MiB = 1024 * 1024;
const GiB = 1024 * 1024 * 1024;

/**
 * printf("%.Nf"). toFixed rounds the exact binary value, as glibc does,
 * except on an exact tie (0.125 to 2 places), which toFixed rounds up and
 * glibc to even: those are found exactly, with BigInt.
 */
export function fixed(x: number, digits: number): string {
  const n = tieRoundedToEven(x, digits);
  if (n === null) return x.toFixed(digits);
  const str = n.toString().padStart(digits + 1, "0");
  return digits === 0 ? str : `${str.slice(0, -digits)}.${str.slice(-digits)}`;
}

/** If x * 10^digits is exactly k + 1/2 (x >= 0), the even one of k, k + 1; else null. */
function tieRoundedToEven(x: number, digits: number): bigint | null {
  if (!(x >= 0) || !Number.isFinite(x)) return null;
  const dv = new DataView(new ArrayBuffer(8));
  dv.setFloat64(0, x);
  const bits = dv.getBigUint64(0);
  const biased = Number((bits >> 52n) & 0x7ffn);
  const frac = bits & ((1n << 52n) - 1n);
  const m = biased === 0 ? frac : frac | (1n << 52n);
  const e = biased === 0 ? -1074 : biased - 1075; // x = m * 2^e
  if (e >= 0) return null; // an integer: no half
  const twice = m * 2n * 10n ** BigInt(digits); // 2 * x * 10^digits * 2^-e
  const q = twice >> BigInt(-e);
  if (q << BigInt(-e) !== twice || (q & 1n) === 0n) return null; // not an odd number of halves
  const k = q >> 1n;
  return (k & 1n) === 0n ? k : k + 1n;
}

/** printf("%W.Nf"). */
const fw = (x: number, width: number, digits: number) => fixed(x, digits).padStart(width);
/** printf("%2d"). */
const d2 = (n: number) => String(n).padStart(2);

export function humanSize(bytes: number): string {
  const b = Math.floor(bytes); // nbdkit passes the double to a uint64_t
  if (b < KiB) return `${b} bytes`;
  if (b < MiB) return `${fixed(b / KiB, 2)} KiB`;
  if (b < GiB) return `${fixed(b / MiB, 2)} MiB`;
  return `${fixed(b / GiB, 2)} GiB`;
}

function humanRate(bytes: number, usecs: number): string {
  const secs = usecs / 1e6;
  return secs !== 0 ? humanSize(bytes / secs) : "(n/a)";
}

export class OpStats {
  ops = 0;
  bytes = 0;
  /** Time spent in this kind of request, summed (ns). */
  ns = 0;
  /** size bits -> alignment bits (-1: offset 0, any alignment) -> requests. */
  readonly count = new Map<number, Map<number, number>>();
  /** size bits -> bytes. */
  readonly size = new Map<number, number>();

  constructor(readonly name: string) {}

  record(size: number, offset: number, ns: number, histogram: boolean): void {
    this.ops++;
    this.bytes += size;
    this.ns += ns;
    if (!histogram || size === 0) return;
    const bits = Math.floor(Math.log2(size));
    const align = alignment(offset);
    let m = this.count.get(bits);
    if (!m) this.count.set(bits, (m = new Map()));
    m.set(align, (m.get(align) ?? 0) + 1);
    this.size.set(bits, (this.size.get(bits) ?? 0) + size);
  }
}

/** Trailing zero bits of the offset; -1 for offset 0 (aligned to anything). */
function alignment(offset: number): number {
  if (offset === 0) return -1;
  let a = 0;
  while (offset % 2 === 0) {
    offset /= 2;
    a++;
  }
  return a;
}

const usecsOf = (ns: number) => Math.floor(ns / 1000);

function alignmentLines(align: Map<number, number>, threshold: number, out: string[]): void {
  let anyAlign = 0;
  let total = 0;
  const hist = new Map<number, number>();
  for (const [bits, n] of align) {
    if (bits === -1) anyAlign = n;
    else hist.set(bits, n);
    total += n;
  }
  // A request aligned to 2^k is aligned to every smaller power too.
  const keys = [...hist.keys()].sort((a, b) => a - b);
  const cum = new Map<number, number>();
  for (const k of keys) cum.set(k, keys.filter((j) => j >= k).reduce((s, j) => s + hist.get(j)!, 0) + anyAlign);
  const cutoff = Math.floor((1 - threshold) * total);
  for (let i = 0; i < keys.length; i++) {
    const bits = keys[i]!;
    const n = cum.get(bits)!;
    if (n < cutoff) {
      out.push(`         ${d2(bits)}+ bit-aligned: ${fw((n / total) * 100, 4, 1)}% (${n})`);
      break;
    }
    // Only where the count changes from the next alignment up.
    const next = keys[i + 1];
    if (next === undefined || cum.get(next) !== n) out.push(`         ${d2(bits)} bit aligned: ${fw((n * 100) / total, 5, 1)}% (${n})`);
  }
}

function histogramLines(st: OpStats, threshold: number, out: string[]): void {
  const buckets = [...st.count].map(([bits, align]) => ({ bits, align, n: [...align.values()].reduce((a, b) => a + b, 0) }));
  // Most requests first; equal counts by size (nbdkit keys a map by the
  // count, so of two sizes with the same count it prints only one).
  buckets.sort((a, b) => b.n - a.n || a.bits - b.bits);
  const total = st.ops;
  const toPrint = threshold * total;
  let printedReqs = 0;
  let printedBytes = 0;
  for (const b of buckets) {
    if (printedReqs >= toPrint) {
      const n = total - printedReqs;
      out.push(`    other sizes: ${fw((n / total) * 100, 4, 1)}% (${n} reqs, ${humanSize(st.bytes - printedBytes)} total)`);
      break;
    }
    const bytes = st.size.get(b.bits)!;
    out.push(`    ${d2(b.bits)} bits: ${fw((b.n / total) * 100, 4, 1)}% (${b.n} reqs, ${humanSize(bytes)} total)`);
    printedReqs += b.n;
    printedBytes += bytes;
    alignmentLines(b.align, threshold, out);
  }
}

/** The whole report, from `elapsedNs` of running (nbdkit writes it at exit). */
export function report(all: OpStats[], elapsedNs: number, threshold: number): string {
  const usecs = usecsOf(elapsedNs);
  const out: string[] = [];
  const ops = all.reduce((s, st) => s + st.ops, 0);
  // Bytes moved: extents and cache requests move none.
  const bytes = all.filter((st) => st.name !== "extents" && st.name !== "cache").reduce((s, st) => s + st.bytes, 0);
  out.push(`total: ${ops} ops, ${fixed(usecs / 1e6, 6)} s, ${humanSize(bytes)}, ${humanRate(bytes, usecs)}/s`);
  for (const st of all) {
    if (st.ops === 0) continue;
    out.push(
      `${st.name}: ${st.ops} ops, ${fixed(usecsOf(st.ns) / 1e6, 6)} s, ${humanSize(st.bytes)}, ` +
        `${humanRate(st.bytes, usecsOf(st.ns))}/s op, ${humanRate(st.bytes, usecs)}/s total`,
    );
    if (threshold !== 0 && st.count.size !== 0) {
      out.push("  Request size and alignment breakdown:");
      histogramLines(st, threshold, out);
      out.push("");
    }
  }
  return out.map((l) => l + "\n").join("");
}
