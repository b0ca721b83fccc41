// Block status and sparse reads of regular files, from SEEK_DATA/SEEK_HOLE.

import type { Extent, ReadPiece } from "../../backend/types.js";
import { NBD_STATE_HOLE, NBD_STATE_ZERO } from "../../protocol/constants.js";
import { allocationRuns, type DataRun } from "../../sys/seek.js";
import { readFull, type PositionalFile } from "./io.js";

/**
 * Holes shorter than this are read as data: a hole chunk costs a reply
 * header, and file systems allocate in blocks of 4 KiB or more, so shorter
 * holes only occur where a read starts or ends inside one.
 */
export const MIN_HOLE = 4096;

/** base:allocation extents of [offset, offset + count) of the file at fd. */
export function fileExtents(fd: number, count: number, offset: number, one: boolean, known?: DataRun): Extent[] {
  // Inside the data run already found: no lseek (on tmpfs SEEK_HOLE walks the run page by page).
  if (known && offset >= known.start && offset < known.end) {
    const n = Math.min(count, known.end - offset);
    return [{ length: n, type: 0 }];
  }
  return allocationRuns(fd, offset, offset + count, one, known).map((r) => ({
    length: r.length,
    type: r.hole ? NBD_STATE_HOLE | NBD_STATE_ZERO : 0,
  }));
}

/**
 * Data and hole pieces of a read of buf.length bytes at offset: holes of
 * MIN_HOLE bytes or more are reported (their bytes of buf left as they
 * are), everything else is read into buf.
 */
export async function readSparse(fh: PositionalFile & { fd: number }, buf: Buffer, offset: number, known?: DataRun): Promise<ReadPiece[]> {
  if (known && offset >= known.start && offset + buf.length <= known.end) {
    await readFull(fh, buf, offset);
    return [{ length: buf.length, hole: false }];
  }
  const pieces: ReadPiece[] = [];
  for (const r of allocationRuns(fh.fd, offset, offset + buf.length, false, known)) {
    const hole = r.hole && r.length >= MIN_HOLE;
    const last = pieces[pieces.length - 1];
    if (last !== undefined && last.hole === hole) last.length += r.length;
    else pieces.push({ length: r.length, hole });
  }
  let pos = 0;
  for (const p of pieces) {
    if (!p.hole) await readFull(fh, buf.subarray(pos, pos + p.length), offset + pos);
    pos += p.length;
  }
  return pieces;
}
