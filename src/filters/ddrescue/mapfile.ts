// GNU ddrescue mapfiles: comment lines (#...), one status line
// (current_pos current_status [current_pass]), then one line per block:
// "pos size status", status one of ? * / - + (only + is rescued data).
// Numbers are read as C's %i (as nbdkit): 0x... hex, 0... octal, else
// decimal; ddrescue itself writes 0x hex.

export interface Range {
  start: number;
  end: number; // exclusive
}

function parseNumber(s: string, what: string, where: string): number {
  const neg = s.startsWith("-");
  const t = neg || s.startsWith("+") ? s.slice(1) : s;
  let n: bigint;
  if (/^0[xX][0-9a-fA-F]+$/.test(t)) n = BigInt(t);
  else if (/^0[0-7]*$/.test(t)) n = BigInt("0o" + (t.slice(1) || "0"));
  else if (/^[1-9][0-9]*$/.test(t)) n = BigInt(t);
  else throw new Error(`${where}: ${what} is not a number: '${s}'`);
  if (neg && n !== 0n) throw new Error(`${where}: block ${what} must not be negative`);
  if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`${where}: ${what} is too large: '${s}'`);
  return Number(n);
}

/** The rescued ('+') ranges of a mapfile's text, as given (unsorted, possibly adjacent). */
export function parseMapfile(text: string, name: string): Range[] {
  const out: Range[] = [];
  let statusSeen = false;
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/\r$/, "");
    const where = `${name}:${i + 1}`;
    if (line.startsWith("#") || line.trim() === "") continue;
    if (!statusSeen) {
      statusSeen = true; // current_pos current_status current_pass: not needed to serve
      continue;
    }
    const f = line.trim().split(/\s+/);
    if (f.length < 3 || f[2]!.length !== 1 || !"?*/-+".includes(f[2]!)) {
      throw new Error(`${where}: not a ddrescue mapfile line (pos size status): '${line.slice(0, 200)}'`);
    }
    const start = parseNumber(f[0]!, "offset", where);
    const size = parseNumber(f[1]!, "length", where);
    if (start + size > Number.MAX_SAFE_INTEGER) throw new Error(`${where}: block ends beyond 2^53`);
    if (f[2] === "+" && size > 0) out.push({ start, end: start + size });
  }
  return out;
}

/** Sorted, merged ranges (overlapping or adjacent ones become one). */
export function mergeRanges(ranges: readonly Range[]): Range[] {
  const sorted = [...ranges].sort((a, b) => a.start - b.start);
  const out: Range[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.start <= last.end) last.end = Math.max(last.end, r.end);
    else out.push({ ...r });
  }
  return out;
}

/** Whether [offset, offset + count) lies inside one of the merged ranges. */
export function covered(merged: readonly Range[], offset: number, count: number): boolean {
  let lo = 0;
  let hi = merged.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const r = merged[mid]!;
    if (offset < r.start) hi = mid - 1;
    else if (offset >= r.end) lo = mid + 1;
    else return offset + count <= r.end;
  }
  return false;
}
