// protect filter: write-protect byte ranges of the layer below
// (nbdkit-protect-filter). Reads are never affected. A write, trim or zero
// that touches a protected range succeeds only if it would leave that
// range's bytes as they are (a write of the same bytes; zeroing or
// trimming bytes that already read as zero); otherwise it fails with EPERM
// and nothing is written. Requests that touch no protected byte go down
// unchanged.

import { NbdError, type Context, type Filter } from "../../backend/types.js";
import { NBD_EPERM } from "../../protocol/constants.js";
import { isZero } from "../kit/zeros.js";
import { firstFrom, mergeRanges, parseRange, type Range } from "./ranges.js";

/** Protected bytes are read back and compared in pieces of at most this. */
const CHECK_CHUNK = 1024 * 1024;

export default function createFilter(): Filter {
  const given: Range[] = [];

  const filter: Filter = {
    name: "protect",
    version: "1.0.0",
    longname: "nbdstate protect filter",
    description: "Write-protect ranges of the underlying plugin.",
    configHelp: "protect=<START>-<END>      Protect range of bytes START-END (inclusive).",

    config(next, key, value) {
      if (key !== "protect") return next(key, value);
      given.push(...parseRange(value));
    },

    configComplete(next) {
      const ranges = mergeRanges(given);
      // Without ranges nothing is protected: no callbacks, all passes through.
      if (ranges.length > 0) Object.assign(filter, writeChecks(ranges));
      return next();
    },
  };
  return filter;
}

function writeChecks(ranges: Range[]): Pick<Filter, "pwrite" | "trim" | "zero"> {
  const touches = (offset: number, count: number): boolean => {
    const i = firstFrom(ranges, offset);
    return i < ranges.length && ranges[i]!.start <= offset + count - 1;
  };
  return {
    pwrite(next, _h, buf, offset, flags) {
      if (!touches(offset, buf.length)) return next.pwrite(buf, offset, flags);
      return check(next, ranges, offset, buf.length, buf).then(() => next.pwrite(buf, offset, flags));
    },
    trim(next, _h, count, offset, flags) {
      if (!touches(offset, count)) return next.trim(count, offset, flags);
      return check(next, ranges, offset, count, null).then(() => next.trim(count, offset, flags));
    },
    zero(next, _h, count, offset, flags) {
      if (!touches(offset, count)) return next.zero(count, offset, flags);
      return check(next, ranges, offset, count, null).then(() => next.zero(count, offset, flags));
    },
  };
}

/**
 * Refuse (EPERM) unless every protected byte in [offset, offset+count)
 * already equals what would be written: `data` for a write, zero otherwise.
 */
async function check(next: Context, ranges: Range[], offset: number, count: number, data: Buffer | null): Promise<void> {
  const end = offset + count; // exclusive
  let scratch: Buffer | null = null;
  for (let i = firstFrom(ranges, offset); i < ranges.length && ranges[i]!.start < end; i++) {
    const r = ranges[i]!;
    let pos = Math.max(r.start, offset);
    const stop = Math.min(r.end + 1, end);
    while (pos < stop) {
      const n = Math.min(stop - pos, CHECK_CHUNK);
      scratch ??= Buffer.allocUnsafe(Math.min(CHECK_CHUNK, count));
      const have = scratch.subarray(0, n);
      await next.pread(have, pos, 0);
      const same = data ? have.equals(data.subarray(pos - offset, pos - offset + n)) : isZero(have);
      if (!same) throw new NbdError(NBD_EPERM, `protect: write to protected range ${r.text} refused`);
      pos += n;
    }
  }
}
