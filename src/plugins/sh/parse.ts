// What scripts print, parsed: export lists, extents, block sizes, thread
// models and FUA/cache modes; and request flags as scripts receive them.

import { appendExtent } from "../../backend/extents.js";
import { FLAG_FAST_ZERO, FLAG_FUA, FLAG_MAY_TRIM, FLAG_REQ_ONE, NbdError } from "../../backend/types.js";
import type { BlockSize, CacheMode, Extent, ExportEntry } from "../../backend/types.js";
import { NBD_EIO } from "../../protocol/constants.js";
import { parseSize } from "../../backend/size.js";

export type ThreadModel = "serialize_connections" | "serialize_all_requests" | "serialize_requests" | "parallel";

/** The output minus one final newline (what nbdkit strips from a handle, size, mode...). */
export function chomp(s: string): string {
  return s.endsWith("\n") ? s.slice(0, -1) : s;
}

/**
 * Lines of output: a final newline ends the last line rather than starting
 * an empty one, and a last line without a newline still counts (nbdkit
 * drops it: a bug, see README).
 */
function lines(s: string): string[] {
  if (s === "") return [];
  const l = s.split("\n");
  if (l[l.length - 1] === "") l.pop();
  return l;
}

const MODES = ["NAMES", "INTERLEAVED", "NAMES+DESCRIPTIONS"] as const;

/** The list_exports output format: the first line names it; NAMES if it names none. */
function splitMode(s: string): { mode: (typeof MODES)[number]; rest: string[] } {
  const l = lines(s);
  const first = l[0];
  if (first !== undefined && (MODES as readonly string[]).includes(first)) {
    return { mode: first as (typeof MODES)[number], rest: l.slice(1) };
  }
  return { mode: "NAMES", rest: l };
}

/** list_exports output: NAMES, INTERLEAVED or NAMES+DESCRIPTIONS. */
export function parseExports(s: string): ExportEntry[] {
  const { mode, rest } = splitMode(s);
  if (mode === "NAMES") return rest.map((name) => ({ name }));
  const out: ExportEntry[] = [];
  if (mode === "INTERLEAVED") {
    for (let i = 0; i < rest.length; i += 2) out.push(entry(rest[i]!, rest[i + 1]));
    return out;
  }
  // NAMES+DESCRIPTIONS: the first half (rounded up) are names, the rest their descriptions.
  const n = Math.ceil(rest.length / 2);
  for (let i = 0; i < n; i++) out.push(entry(rest[i]!, rest[n + i]));
  return out;
}

function entry(name: string, description: string | undefined): ExportEntry {
  return description ? { name, description } : { name };
}

/** default_export output: a name, or any list form (its first name); nothing is "". */
export function parseDefaultExport(s: string): string {
  return splitMode(s).rest[0] ?? "";
}

/**
 * extents output, "offset length [type]" per line, as nbdkit_add_extent
 * takes them: contiguous and ascending; what lies before `offset` or
 * beyond `offset + count` is cut away; empty extents are skipped and
 * neighbours of one type merged. `type` is a number or words
 * containing "hole" and "zero".
 */
export function parseExtents(who: string, s: string, offset: number, count: number): Extent[] {
  const end = offset + count;
  const out: Extent[] = [];
  let next = -1;
  for (const line of lines(s)) {
    const f = line.split(/[ \t]+/).filter((x) => x !== "");
    if (f.length < 2) throw new NbdError(NBD_EIO, `${who}: extents: cannot parse ${line}`);
    let off: number;
    let len: number;
    try {
      off = parseSize(f[0]!);
      len = parseSize(f[1]!);
    } catch (e) {
      throw new NbdError(NBD_EIO, `${who}: extents: ${(e as Error).message}`);
    }
    const type = extentType(f[2]);
    if (next >= 0 && off !== next) {
      throw new NbdError(NBD_EIO, `${who}: extents: extents must be in ascending order and contiguous (${line})`);
    }
    next = off + len;
    let a = off;
    let b = Math.min(off + len, end);
    if (b <= a) continue;
    if (out.length === 0) {
      if (b <= offset) continue;
      if (a > offset) throw new NbdError(NBD_EIO, `${who}: extents: the first extent must not start after the request offset ${offset}`);
      a = offset;
    }
    appendExtent(out, b - a, type);
  }
  if (out.length === 0) throw new NbdError(NBD_EIO, `${who}: extents: the script returned no extent covering offset ${offset}`);
  return out;
}

function extentType(t: string | undefined): number {
  if (t === undefined) return 0;
  const m = /^\d+/.exec(t);
  // Only the hole (1) and zero (2) bits mean anything in base:allocation.
  if (m) return Number(m[0]) & 3;
  return (t.includes("hole") ? 1 : 0) | (t.includes("zero") ? 2 : 0);
}

const MAX_U32 = 0xffff_ffff;
const isPow2 = (n: number) => n > 0 && (n & (n - 1)) === 0;

/** block_size output: minimum, preferred, maximum; "0 0 0" means none. Checked as nbdkit checks them. */
export function parseBlockSize(who: string, s: string): BlockSize | null {
  const f = s.split(/[ \t\n]+/).filter((x) => x !== "");
  const v = f.slice(0, 3).map((x) => {
    try {
      return parseSize(x);
    } catch {
      return -1;
    }
  });
  if (v.length < 3 || v.some((x) => x < 0 || x > MAX_U32)) throw new NbdError(NBD_EIO, `${who}: block_size method cannot be parsed`);
  const [minimum, preferred, maximum] = v as [number, number, number];
  if (minimum === 0 && preferred === 0 && maximum === 0) return null;
  const bad = (why: string) => new NbdError(NBD_EIO, `${who}: block_size: ${why}`);
  if (minimum < 1 || minimum > 65536 || !isPow2(minimum)) throw bad("minimum block size must be a power of 2 between 1 and 64K");
  if (!isPow2(preferred) || preferred < 512 || preferred > 32 * 1024 * 1024) throw bad("preferred block size must be a power of 2 between 512 and 32M");
  if (maximum !== MAX_U32 && maximum % minimum !== 0) throw bad("maximum block size must be -1 or a multiple of the minimum");
  if (minimum > preferred || preferred > maximum) throw bad("block sizes must be minimum <= preferred <= maximum");
  return { minimum, preferred, maximum };
}

/** thread_model output; unknown text is the safe serialize_all_requests. */
export function parseThreadModel(s: string): ThreadModel {
  const v = chomp(s).toLowerCase().replace(/-/g, "_");
  if (v === "parallel" || v === "serialize_requests" || v === "serialize_all_requests" || v === "serialize_connections") return v;
  return "serialize_all_requests";
}

/** can_fua / can_cache output: none, emulate or native (any case). */
export function parseMode(who: string, method: string, s: string): CacheMode {
  const v = chomp(s).toLowerCase();
  if (v === "none" || v === "emulate" || v === "native") return v;
  throw new NbdError(NBD_EIO, `${who}: could not parse output from ${method} method: ${chomp(s)}`);
}

/** Request flags as scripts get them: "fua,may_trim,req_one,fast" (any subset, in this order). */
export function flagsString(flags: number): string {
  if (flags === 0) return "";
  const f: string[] = [];
  if (flags & FLAG_FUA) f.push("fua");
  if (flags & FLAG_MAY_TRIM) f.push("may_trim");
  if (flags & FLAG_REQ_ONE) f.push("req_one");
  if (flags & FLAG_FAST_ZERO) f.push("fast");
  return f.join(",");
}
