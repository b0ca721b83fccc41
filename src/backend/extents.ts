// Extent lists: clipping what a layer returned to what was asked, and
// building one with adjacent extents of a type merged.

import type { Extent } from "./types.js";

/**
 * The extents of `ext` that cover [0, count) of a request, the last one cut
 * at count; with reqOne only the first. Empty extents are skipped. Throws
 * when nothing covers the request (a layer bug: the request must get an
 * error, not an empty reply).
 */
export function clipExtents(ext: readonly Extent[], count: number, reqOne = false): Extent[] {
  const out: Extent[] = [];
  let total = 0;
  for (const e of ext) {
    if (!(e.length > 0)) continue;
    const length = Math.min(e.length, count - total);
    out.push(length === e.length ? e : { length, type: e.type });
    total += length;
    if (total >= count || reqOne) break;
  }
  if (out.length === 0) throw new Error("extents: no extent covers the request");
  return out;
}

/** Append [length, type] to out, merged into the last extent if it has the same type; empty lengths are skipped. */
export function appendExtent(out: Extent[], length: number, type: number): void {
  if (!(length > 0)) return;
  const prev = out[out.length - 1];
  if (prev && prev.type === type) prev.length += length;
  else out.push({ length, type });
}
