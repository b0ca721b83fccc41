// Block status of a cow overlay, for base:allocation and
// qemu:allocation-depth alike: the range is cut into runs of blocks with
// the same key (their overlay state, or just "in the overlay or not"); a
// run the overlay answers gets one type, the others are asked of the layer
// below and its answer mapped. Adjacent extents of one type are merged;
// with REQ_ONE only the first run is answered.

import { appendExtent } from "../../backend/extents.js";
import { FLAG_REQ_ONE, type Extent } from "../../backend/types.js";

export interface StatusRules {
  /** The run key of a block's overlay state. */
  key(state: number): number;
  /** The type of a run of this key, or null: ask the layer below. */
  own(key: number): number | null;
  below(length: number, offset: number): Promise<Extent[]>;
  /** The type for what the layer below answered. */
  mapBelow(type: number): number;
}

export async function overlayStatus(
  o: { readonly state: Uint8Array; readonly bs: number; readonly size: number },
  count: number, offset: number, flags: number, r: StatusRules,
): Promise<Extent[]> {
  const out: Extent[] = [];
  const push = (length: number, type: number) => appendExtent(out, length, type);
  const { bs, state: st } = o;
  const end = Math.min(offset + count, o.size);
  const reqOne = (flags & FLAG_REQ_ONE) !== 0;
  let pos = offset;
  while (pos < end) {
    const b = Math.floor(pos / bs);
    const k = r.key(st[b]!);
    let e = b + 1;
    while (e * bs < end && r.key(st[e]!) === k) e++;
    const runEnd = Math.min(e * bs, end);
    const own = r.own(k);
    if (own === null) {
      let got = 0;
      for (const x of await r.below(runEnd - pos, pos)) {
        const len = Math.min(x.length, runEnd - pos - got);
        if (!(len > 0)) continue;
        push(len, r.mapBelow(x.type));
        got += len;
        if (got >= runEnd - pos) break;
      }
      if (got === 0) throw new Error("cow: the layer below returned no extent");
      pos += got;
    } else {
      push(runEnd - pos, own);
      pos = runEnd;
    }
    if (reqOne) break;
  }
  return out;
}
