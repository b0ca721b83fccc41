// Reads, writes and extents over a DiskLayout: partition regions go to
// their backing store, table sectors and padding are served from memory.
// Writes may only "change" the table and padding to what they already hold
// (a client rewriting a sector unchanged is fine; anything else is EIO).

import { appendExtent } from "../../backend/extents.js";
import { NbdError, type Extent } from "../../backend/types.js";
import { NBD_EIO, NBD_STATE_HOLE, NBD_STATE_ZERO } from "../../protocol/constants.js";
import type { DiskLayout, Region } from "./partition-table.js";

/** The store behind partition regions: offsets are within partition `index`. */
export interface PartitionIO {
  read(index: number, buf: Buffer, offset: number): Promise<void>;
  write?(index: number, buf: Buffer, offset: number): Promise<void>;
}

/** Index of the region holding `offset` (which must be inside the disk). */
export function findRegion(regions: readonly Region[], offset: number): number {
  let lo = 0;
  let hi = regions.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (regions[mid]!.start <= offset) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** Visit the pieces of [offset, offset + length): each region and the part of it covered. */
async function eachPiece(
  layout: DiskLayout, offset: number, length: number,
  visit: (r: Region, at: number, pos: number, n: number) => Promise<void> | void,
): Promise<void> {
  let i = findRegion(layout.regions, offset);
  let pos = 0;
  while (pos < length) {
    const r = layout.regions[i++]!;
    const at = offset + pos - r.start;
    const n = Math.min(r.length - at, length - pos);
    await visit(r, at, pos, n);
    pos += n;
  }
}

export function readRegions(layout: DiskLayout, io: PartitionIO, buf: Buffer, offset: number): Promise<void> {
  return eachPiece(layout, offset, buf.length, (r, at, pos, n) => {
    const out = buf.subarray(pos, pos + n);
    if (r.kind === "part") return io.read(r.index, out, at);
    if (r.kind === "data") r.data.copy(out, 0, at, at + n);
    else out.fill(0);
  });
}

export function writeRegions(layout: DiskLayout, io: PartitionIO, buf: Buffer, offset: number): Promise<void> {
  return eachPiece(layout, offset, buf.length, (r, at, pos, n) => {
    const src = buf.subarray(pos, pos + n);
    if (r.kind === "part") return io.write!(r.index, src, at);
    if (r.kind === "data") {
      if (!src.equals(r.data.subarray(at, at + n))) {
        throw new NbdError(NBD_EIO, "attempt to change the partition table of the virtual disk");
      }
    } else if (!isZero(src)) {
      throw new NbdError(NBD_EIO, "attempt to write non-zeroes to padding between partitions");
    }
  });
}

/** Table sectors and partitions are data; padding is a hole that reads as zeros. */
export function regionExtents(layout: DiskLayout, count: number, offset: number): Extent[] {
  const out: Extent[] = [];
  let i = findRegion(layout.regions, offset);
  let pos = offset;
  const end = offset + count;
  while (pos < end && i < layout.regions.length) {
    const r = layout.regions[i++]!;
    const n = r.start + r.length - pos;
    const type = r.kind === "zero" ? NBD_STATE_HOLE | NBD_STATE_ZERO : 0;
    appendExtent(out, n, type);
    pos += n;
  }
  return out;
}

const ZEROS = Buffer.alloc(64 * 1024);

export function isZero(b: Buffer): boolean {
  for (let i = 0; i < b.length; i += ZEROS.length) {
    const n = Math.min(ZEROS.length, b.length - i);
    if (!b.subarray(i, i + n).equals(ZEROS.subarray(0, n))) return false;
  }
  return true;
}
