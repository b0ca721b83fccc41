// cache=none for writes: keep written data from piling up in the page
// cache. As nbdkit (and libnbd's nbdcopy) do on Linux: start writeback of
// each write at once, and once 8 newer writes have followed it, wait for
// it to be written and drop its pages. The window is shared by all
// connections of the process.

import { startWriteback, writebackAndDrop } from "../../sys/fadvise.js";

const NR_WINDOWS = 8;

interface Window {
  fd: number;
  offset: number;
  len: number;
}

const windows: Window[] = [];

/** After a write of [offset, offset + len) to fd, with cache=none. */
export async function evictWrite(fd: number, offset: number, len: number): Promise<void> {
  windows.push({ fd, offset, len });
  const oldest = windows.length > NR_WINDOWS ? windows.shift() : undefined;
  await startWriteback(fd, offset, len);
  if (oldest !== undefined) await writebackAndDrop(oldest.fd, oldest.offset, oldest.len);
}

/** Before fd is closed: its windows missed the boat. */
export function forgetWrites(fd: number): void {
  for (let i = windows.length - 1; i >= 0; i--) if (windows[i]!.fd === fd) windows.splice(i, 1);
}
