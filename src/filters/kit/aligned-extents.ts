// Block status in whole units of `align` bytes, for filters that only
// serve aligned requests (swab): extents from below are cut at the first
// boundary that is not aligned. When that boundary falls inside the first
// unit, the pieces of that unit are merged into one extent whose type is
// the bitwise AND of theirs (hole only if all of it is a hole, zero only
// if all of it reads as zeros: 0 is always the safe answer).

import { FLAG_REQ_ONE, type Context, type Extent } from "../../backend/types.js";

export async function alignedExtents(next: Context, count: number, offset: number, flags: number, align: number): Promise<Extent[]> {
  const ext = await next.extents(count, offset, flags);
  const out: Extent[] = [];
  let pos = 0; // bytes covered so far, relative to offset
  for (let i = 0; i < ext.length && pos < count; i++) {
    const e = ext[i]!;
    const length = Math.min(e.length, count - pos);
    if (!(length > 0)) continue;
    if ((pos + length) % align === 0) {
      out.push(length === e.length ? e : { length, type: e.type });
      pos += length;
      continue;
    }
    const cut = Math.floor((pos + length) / align) * align;
    if (cut > pos) {
      // The unaligned end is past the first unit: stop at the last whole unit.
      out.push({ length: cut - pos, type: e.type });
      return out;
    }
    // The unit starting at pos is made of several pieces: merge them.
    let type = e.type;
    let have = length;
    let j = i + 1;
    while (have < align) {
      let piece: Extent | undefined;
      while (j < ext.length && !(ext[j]!.length > 0)) j++;
      if (j < ext.length) piece = ext[j++];
      else {
        const more = await next.extents(align - have, offset + pos + have, flags & ~FLAG_REQ_ONE);
        piece = more.find((x) => x.length > 0);
        if (!piece) throw new Error("extents: the layer below returned no extent");
      }
      type &= piece.type;
      have += piece.length;
    }
    out.push({ length: align, type });
    return out;
  }
  if (out.length === 0) throw new Error("extents: the layer below returned no extent");
  return out;
}
