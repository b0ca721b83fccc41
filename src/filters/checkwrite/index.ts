// checkwrite filter (nbdkit-checkwrite-filter): writes become checks that
// the data written equals what the layer below already holds (EIO when it
// does not); zero and trim check that the range reads as zeros. The layer
// below is opened read-only and never written. Used to test copying tools:
//
//   nbdstate -U - --filter=checkwrite file disk.img --run 'nbdcopy "$uri" "$uri"'

import { FLAG_FAST_ZERO, NbdError, type Context, type Filter } from "../../backend/types.js";
import { NBD_EIO, NBD_ENOTSUP, NBD_STATE_ZERO } from "../../protocol/constants.js";

/** Reads during a zero check are at most this big. */
const CHUNK = 4 * 1024 * 1024;

const mismatch = () => new NbdError(NBD_EIO, "checkwrite: data written does not match expected");

let zeros: Buffer | undefined;

/** Whether b is all zeros (native comparisons against a zero buffer). */
function isZero(b: Buffer): boolean {
  zeros ??= Buffer.alloc(1024 * 1024);
  for (let p = 0; p < b.length; p += zeros.length) {
    const n = Math.min(zeros.length, b.length - p);
    if (!b.subarray(p, p + n).equals(n === zeros.length ? zeros : zeros.subarray(0, n))) return false;
  }
  return true;
}

/** Check that [offset, offset + count) below reads as zeros (by block status first when it can). */
async function checkZero(next: Context, count: number, offset: number, flags: number): Promise<void> {
  const useExtents = await next.canExtents();
  const end = offset + count;
  let pos = offset;
  while (pos < end) {
    let runEnd = end;
    let zero = false;
    if (useExtents) {
      const ext = await next.extents(end - pos, pos, 0);
      const first = ext.find((e) => e.length > 0);
      if (!first) throw new Error("checkwrite: the layer below returned no extent");
      runEnd = Math.min(end, pos + first.length);
      zero = (first.type & NBD_STATE_ZERO) !== 0;
    }
    if (!zero) {
      // Data must be read to be checked: never fast.
      if (flags & FLAG_FAST_ZERO) throw new NbdError(NBD_ENOTSUP, "checkwrite: fast zero needs a read to check");
      const buf = Buffer.allocUnsafe(Math.min(CHUNK, runEnd - pos));
      for (let p = pos; p < runEnd; p += buf.length) {
        const piece = runEnd - p < buf.length ? buf.subarray(0, runEnd - p) : buf;
        await next.pread(piece, p, 0);
        if (!isZero(piece)) throw mismatch();
      }
    }
    pos = runEnd;
  }
}

export default function createFilter(): Filter<void> {
  return {
    name: "checkwrite",
    version: "1.0.0",
    longname: "nbdstate checkwrite filter",
    description: "Check that what is written matches what the layer below holds.",
    configHelp: "(no parameters of its own: they go to the plugin)",

    async open(a) {
      await a.next(true, a.exportName);
    },

    // Whatever the layer below can do, every write-like request is accepted (and checked).
    canWrite: () => true,
    canFlush: () => true,
    canFua: () => "native" as const,
    canTrim: () => true,
    canZero: () => true,
    canFastZero: () => true,
    // Nothing is written, so every connection sees the same data.
    canMultiConn: () => true,

    async pwrite(next, _h, buf, offset) {
      const expected = Buffer.allocUnsafe(buf.length);
      await next.pread(expected, offset, 0);
      if (!buf.equals(expected)) throw mismatch();
    },
    flush() {},
    trim(next, _h, count, offset, flags) {
      return checkZero(next, count, offset, flags);
    },
    zero(next, _h, count, offset, flags) {
      return checkZero(next, count, offset, flags);
    },
  };
}
