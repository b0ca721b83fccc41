// The extent list file of the extentlist filter: one "offset length [type]"
// per line, offset and length in nbdkit's size syntax (1M, 512s, ...), type
// a number 0..3 or a comma-separated list of the words hole and zero
// (missing: 0, data). Extents may come in any order but must not overlap;
// gaps (and everything after the last extent) are holes that read as zeros.

import { parseSize } from "../../backend/size.js";
import { NBD_STATE_HOLE, NBD_STATE_ZERO } from "../../protocol/constants.js";

export interface ListedExtent {
  offset: number;
  length: number;
  type: number;
}

const HOLE = NBD_STATE_HOLE | NBD_STATE_ZERO;

function parseType(s: string | undefined, where: string): number {
  if (s === undefined) return 0;
  if (/^[0-9]+$/.test(s)) {
    const n = Number(s);
    if (n > 3) throw new Error(`${where}: extent type ${s} is not 0..3 (bit 1 hole, bit 2 zero)`);
    return n;
  }
  let type = 0;
  for (const w of s.split(",")) {
    if (w === "hole") type |= NBD_STATE_HOLE;
    else if (w === "zero") type |= NBD_STATE_ZERO;
    else if (w !== "data" && w !== "") throw new Error(`${where}: unknown extent type '${w}' (use hole, zero or a number)`);
  }
  return type;
}

/** Parse the file's text into a sorted list covering [0, 2^53) without gaps. */
export function parseExtentList(text: string, name: string): ListedExtent[] {
  const listed: ListedExtent[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    const where = `extentlist: ${name}:${i + 1}`;
    if (line === "" || line.startsWith("#")) continue;
    const f = line.split(/[ \t]+/);
    if (f.length < 2 || f.length > 3) throw new Error(`${where}: cannot parse '${line.slice(0, 200)}' (offset length [type])`);
    let offset: number;
    let length: number;
    try {
      offset = parseSize(f[0]!);
      length = parseSize(f[1]!);
    } catch (e) {
      throw new Error(`${where}: ${(e as Error).message}`);
    }
    if (offset + length > Number.MAX_SAFE_INTEGER) throw new Error(`${where}: extent ends beyond 2^53`);
    const type = parseType(f[2], where);
    if (length > 0) listed.push({ offset, length, type });
  }
  listed.sort((a, b) => a.offset - b.offset);
  const out: ListedExtent[] = [];
  let end = 0;
  for (const e of listed) {
    if (e.offset < end) throw new Error(`extentlist: ${name}: extents in the extent list are overlapping (at ${e.offset})`);
    if (e.offset > end) out.push({ offset: end, length: e.offset - end, type: HOLE });
    out.push(e);
    end = e.offset + e.length;
  }
  out.push({ offset: end, length: Number.MAX_SAFE_INTEGER - end, type: HOLE });
  return out;
}
