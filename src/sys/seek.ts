// lseek(2) SEEK_DATA / SEEK_HOLE: where a file's data and holes are.

import { E, errno, libc, sysError } from "./libc.js";

const SEEK_DATA = 3;
const SEEK_HOLE = 4;

/** One run of a file: `length` bytes of data, or of hole (reads as zeros). */
export interface Run {
  length: number;
  hole: boolean;
}

/**
 * Whether SEEK_DATA/SEEK_HOLE can be used on fd: libc is reachable and the
 * file system answers SEEK_HOLE (the question nbdkit asks too). Returns a
 * reason string when not.
 */
export function seekProblem(fd: number, size = 0): string | null {
  const l = libc();
  if (l === null) return "no lseek SEEK_HOLE from Node.js";
  // Asked at the last byte: SEEK_HOLE from 0 walks the whole data run, on
  // tmpfs page by page (tens of ms for 1 GiB, at every open).
  if (l.lseek(fd, Math.max(0, size - 1), SEEK_HOLE) >= 0) return null;
  return `lseek SEEK_HOLE: ${sysError("lseek", errno(l)).code}`;
}

/** lseek(fd, offset, whence), or null for ENXIO (no data / past the end). */
function seek(fd: number, offset: number, whence: number): number | null {
  const l = libc()!;
  const r = Number(l.lseek(fd, offset, whence));
  if (r >= 0) return r;
  const n = errno(l);
  if (n === E.ENXIO) return null;
  throw sysError(whence === SEEK_DATA ? "lseek SEEK_DATA" : "lseek SEEK_HOLE", n, `offset ${offset}`);
}

/**
 * A run of data found by SEEK_HOLE, remembered between reads: SEEK_HOLE
 * walks to the end of the data run, which on tmpfs is page by page to the
 * end of a fully written file, on every call (a 1 GiB file read in 256 KiB
 * pieces spent 2 ms per read in lseek). A read inside the run needs no
 * lseek. A stale run is harmless: a range that became a hole since is read
 * as data, and reads zeros; holes are never remembered.
 */
export interface DataRun {
  start: number;
  end: number;
}

/**
 * The data and hole runs covering [offset, end), in order (only the first
 * run if `one`). Only call where seekProblem(fd) is null. The file may
 * change meanwhile; anything past its current end counts as hole, which is
 * what a read there returns. `known`, if given, is set to the data run
 * found (see DataRun).
 */
export function allocationRuns(fd: number, offset: number, end: number, one: boolean, known?: DataRun): Run[] {
  const runs: Run[] = [];
  let pos = offset;
  while (pos < end) {
    // ENXIO from SEEK_DATA: no data at or after pos (final hole or EOF).
    const data = Math.min(seek(fd, pos, SEEK_DATA) ?? end, end);
    if (data > pos) {
      runs.push({ length: data - pos, hole: true });
      pos = data;
      if (one || pos >= end) break;
    }
    // Every file ends in a hole (EOF counts); ENXIO: it shrank under us.
    const holeAt = seek(fd, pos, SEEK_HOLE);
    if (known && holeAt !== null && holeAt > pos) {
      known.start = pos;
      known.end = holeAt;
    }
    const hole = Math.min(holeAt ?? end, end);
    if (hole <= pos) {
      // Data and hole at the same offset can only mean a concurrent change: call it data.
      runs.push({ length: end - pos, hole: false });
      break;
    }
    runs.push({ length: hole - pos, hole: false });
    pos = hole;
    if (one) break;
  }
  return runs;
}
