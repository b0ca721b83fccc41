// Block status through the cache: what the layer below reports, except
// that blocks dirty in the cache are data (their bytes are not below yet).

import { appendExtent } from "../../backend/extents.js";
import type { Extent } from "../../backend/types.js";

/** ext (from offset) with the dirty blocks of bs bytes turned into data extents; adjacent extents of a type merged. */
export function dirtyAsData(ext: readonly Extent[], offset: number, dirty: ReadonlySet<number>, bs: number): Extent[] {
  const out: Extent[] = [];
  let pos = offset;
  for (const x of ext) {
    if (!(x.length > 0)) continue;
    const end = pos + x.length;
    if (x.type === 0) appendExtent(out, x.length, 0);
    else {
      let at = pos;
      for (const b of dirtyIn(dirty, bs, pos, end)) {
        const ds = Math.max(pos, b * bs);
        const de = Math.min(end, (b + 1) * bs);
        appendExtent(out, ds - at, x.type);
        appendExtent(out, de - ds, 0);
        at = de;
      }
      appendExtent(out, end - at, x.type);
    }
    pos = end;
  }
  return out;
}

/** Dirty block numbers overlapping [start, end), ascending. */
function dirtyIn(dirty: ReadonlySet<number>, bs: number, start: number, end: number): number[] {
  const lo = Math.floor(start / bs);
  const hi = Math.floor((end - 1) / bs);
  if (hi - lo + 1 <= dirty.size) {
    const out: number[] = [];
    for (let b = lo; b <= hi; b++) if (dirty.has(b)) out.push(b);
    return out;
  }
  return [...dirty].filter((b) => b >= lo && b <= hi).sort((a, b) => a - b);
}
