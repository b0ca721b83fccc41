// posix_fadvise(2) and sync_file_range(2): page cache hints.

import { libc } from "./libc.js";

/** posix_fadvise advice values (Linux, generic architectures). */
export const FADV = { NORMAL: 0, RANDOM: 1, SEQUENTIAL: 2, WILLNEED: 3, DONTNEED: 4 } as const;

const SYNC_FILE_RANGE_WAIT_BEFORE = 1;
const SYNC_FILE_RANGE_WRITE = 2;
const SYNC_FILE_RANGE_WAIT_AFTER = 4;

/** Whether fadvise and friends can be called here. */
export function canFadvise(): boolean {
  return libc() !== null;
}

/**
 * posix_fadvise(fd, offset, len, advice), called synchronously (Linux only
 * drops or marks pages here; it does not wait for I/O). Returns 0 or an
 * errno number (posix_fadvise returns it rather than setting errno); -1 if
 * libc is unavailable.
 */
export function fadvise(fd: number, offset: number, len: number, advice: number): number {
  const l = libc();
  if (l === null) return -1;
  return l.posixFadvise(fd, offset, len, advice) as number;
}

/** posix_fadvise on koffi's worker thread (WILLNEED may start I/O and block). */
export function fadviseAsync(fd: number, offset: number, len: number, advice: number): Promise<number> {
  const l = libc();
  if (l === null) return Promise.resolve(-1);
  return new Promise((resolve, reject) => {
    l.posixFadvise.async(fd, offset, len, advice, (err: unknown, r: number) => (err ? reject(err) : resolve(r)));
  });
}

function syncFileRange(fd: number, offset: number, len: number, flags: number): Promise<void> {
  const f = libc()?.syncFileRange;
  if (!f) return Promise.resolve();
  // On a worker thread: the WAIT flags wait for writeback. Errors are ignored
  // (this only steers the page cache; flush reports real I/O errors).
  return new Promise((resolve) => f.async(fd, offset, len, flags, () => resolve()));
}

/** Start writing back [offset, offset + len) without waiting. */
export function startWriteback(fd: number, offset: number, len: number): Promise<void> {
  return syncFileRange(fd, offset, len, SYNC_FILE_RANGE_WRITE);
}

/** Wait until [offset, offset + len) is written back, then drop it from the page cache. */
export async function writebackAndDrop(fd: number, offset: number, len: number): Promise<void> {
  await syncFileRange(fd, offset, len, SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
  fadvise(fd, offset, len, FADV.DONTNEED);
}
