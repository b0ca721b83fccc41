// Block status from a layer that wants aligned requests: ask for aligned
// ranges and cut what comes back to whole blocks (as nbdkit_extents_aligned).

import { FLAG_REQ_ONE, type Context, type Extent } from "../../backend/types.js";

/**
 * Extents of [offset, offset + count) of `next`, both multiples of `align`,
 * every boundary a multiple of `align`. An unaligned extent after the first
 * block is cut down (the client asks again for the rest); a first extent
 * shorter than a block is merged with what follows it up to one block,
 * with the types' common bits (a block is a hole only if all of it is).
 */
export async function alignedExtents(next: Context, count: number, offset: number, flags: number, align: number): Promise<Extent[]> {
  const list = (await next.extents(count, offset, flags)).filter((e) => e.length > 0);
  if (list.length === 0) throw new Error("blocksize: the layer below returned no extent");
  const out: Extent[] = [];
  for (let i = 0; i < list.length; i++) {
    const e = list[i]!;
    if (e.length % align === 0) {
      out.push(e);
      continue;
    }
    if (i > 0 || e.length > align) {
      const length = e.length - (e.length % align);
      if (length > 0) out.push({ length, type: e.type });
      return out;
    }
    // The first extent is shorter than a block: make one block of it.
    let length = e.length;
    let type = e.type;
    let rest = list.slice(1);
    while (length < align) {
      const more = rest.shift();
      if (more) {
        length += more.length;
        type &= more.type;
        continue;
      }
      rest = (await next.extents(align - length, offset + length, flags & ~FLAG_REQ_ONE)).filter((x) => x.length > 0);
      if (rest.length === 0) throw new Error("blocksize: the layer below returned no extent");
    }
    return [{ length: align, type }];
  }
  return out;
}
