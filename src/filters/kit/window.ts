// Serving a byte window [start, start + size) of the context below as a
// whole disk: the data callbacks shared by the tar filter (one member's
// data) and the partition filter (one partition). Requests are checked
// against the window, so nothing outside it is read or written, and block
// status from below is shifted and clipped to the window (the served
// item's extents, never the container's).

import { clipExtents } from "../../backend/extents.js";
import { NbdError, type Context, type Extent, type Filter } from "../../backend/types.js";
import { NBD_EINVAL, NBD_ENOSPC } from "../../protocol/constants.js";

export interface WindowHandle {
  /** Offset of the window in the export below. */
  start: number;
  /** Size of the window (the size of the export served). */
  size: number;
}

function check(h: WindowHandle, offset: number, count: number, write = false): void {
  if (offset < 0 || count < 0 || offset > h.size || count > h.size - offset) {
    throw new NbdError(write ? NBD_ENOSPC : NBD_EINVAL, `request [${offset}, +${count}) beyond the end (${h.size})`);
  }
}

/** Refuse a window that does not fit in the export below (checked at prepare). */
export async function checkWindow(next: Context, h: WindowHandle, what: string): Promise<void> {
  const real = await next.getSize();
  if (h.start + h.size > real) {
    throw new Error(`${what} ends at ${h.start + h.size}, beyond the end of the export below (${real} bytes)`);
  }
}

type Ops<H> = Pick<Required<Filter<H>>, "getSize" | "pread" | "pwrite" | "trim" | "zero" | "cache" | "extents">;

/** getSize and the data callbacks of a window filter. */
export function windowOps<H extends WindowHandle>(): Ops<H> {
  return {
    getSize(_next, h) {
      return h.size;
    },
    pread(next, h, buf, off, flags) {
      check(h, off, buf.length);
      return next.pread(buf, h.start + off, flags);
    },
    pwrite(next, h, buf, off, flags) {
      check(h, off, buf.length, true);
      return next.pwrite(buf, h.start + off, flags);
    },
    trim(next, h, count, off, flags) {
      check(h, off, count);
      return next.trim(count, h.start + off, flags);
    },
    zero(next, h, count, off, flags) {
      check(h, off, count, true);
      return next.zero(count, h.start + off, flags);
    },
    cache(next, h, count, off, flags) {
      check(h, off, Math.min(count, Math.max(0, h.size - off)));
      return next.cache(Math.min(count, h.size - off), h.start + off, flags);
    },
    async extents(next, h, count, off, flags): Promise<Extent[]> {
      const want = Math.min(count, h.size - off);
      check(h, off, want);
      if (want <= 0) return [{ length: count, type: 0 }];
      const lower = await next.extents(want, h.start + off, flags);
      return lower.some((e) => e.length > 0) ? clipExtents(lower, want) : [{ length: want, type: 0 }];
    },
  };
}
