// blocksize filter: meet the block size limits of the layer below
// (nbdkit-blocksize-filter).
//   minblock=SIZE  alignment below (power of 2, at most 64K): unaligned
//                  reads are widened, unaligned writes and zeroes become
//                  read-modify-write of whole blocks, unaligned trim heads
//                  and tails are dropped, the size is rounded down
//   maxdata=SIZE   largest read or write below (split above it)
//   maxlen=SIZE    largest trim, zero, cache or extents request below
// Clients may then send anything from 1 byte up: that is what is advertised.
//
// A read-modify-write holds a lock alone, and aligned writes, zeroes and
// trims hold it shared, so no write lands between the read and the write
// back of a block (which would undo it), over all connections. Requests
// that need neither splitting nor alignment go down as they are.

import { parseSize } from "../../backend/size.js";
import { FLAG_FAST_ZERO, FLAG_FUA, NbdError, type Context, type Filter } from "../../backend/types.js";
import { NBD_ENOTSUP } from "../../protocol/constants.js";
import { RwLock } from "../kit/lock.js";
import { alignedExtents } from "./align.js";

const MIN_LIMIT = 64 * 1024;
const MAX_DATA = 64 * 1024 * 1024;
const U32 = 0x1_0000_0000;

interface Handle {
  minblock: number;
  maxdata: number;
  maxlen: number;
}

export default function createFilter(): Filter<Handle> {
  let minblock = 0;
  let maxdata = 0;
  let maxlen = 0;
  const lock = new RwLock();

  function parse(key: string, value: string): number {
    let n: number;
    try {
      n = parseSize(value);
    } catch (e) {
      throw new Error(`blocksize: ${key}: ${(e as Error).message}`);
    }
    if (n === 0) throw new Error(`blocksize: parameter '${key}' must be non-zero if specified`);
    if (n >= U32) throw new Error(`blocksize: parameter '${key}' too large`);
    return n;
  }

  return {
    name: "blocksize",
    version: "1.0.0",
    longname: "nbdstate blocksize filter",
    description: "Adjust requests to meet the block size limits of the plugin.",
    configHelp:
      "minblock=<SIZE>      Minimum block size, power of 2 <= 64k (default 1).\n" +
      "maxdata=<SIZE>       Maximum size for read/write (default 64M).\n" +
      "maxlen=<SIZE>        Maximum size for trim/zero (default 4G-minblock).",

    config(next, key, value) {
      if (key === "minblock") minblock = parse(key, value);
      else if (key === "maxdata") maxdata = parse(key, value);
      else if (key === "maxlen") maxlen = parse(key, value);
      else return next(key, value);
    },

    configComplete(next) {
      if (minblock) {
        if ((minblock & (minblock - 1)) !== 0) throw new Error("blocksize: minblock must be a power of 2");
        if (minblock > MIN_LIMIT) throw new Error(`blocksize: minblock must not exceed ${MIN_LIMIT}`);
        if (maxdata % minblock) throw new Error(`blocksize: maxdata must be a multiple of ${minblock}`);
        if (maxlen % minblock) throw new Error(`blocksize: maxlen must be a multiple of ${minblock}`);
      }
      return next();
    },

    open() {
      return { minblock: 1, maxdata: MAX_DATA, maxlen: U32 - 1 };
    },

    // Limits the command line left open come from the layer below.
    async prepare(next, h) {
      const below = await next.blockSize();
      const mb = Math.max(minblock || 1, below?.minimum ?? 1);
      let md = maxdata || Math.min(maxlen || MAX_DATA, MAX_DATA);
      if (below?.maximum) md = Math.min(md, below.maximum);
      md -= md % mb;
      if (md === 0) throw new Error(`blocksize: maxdata is smaller than the block size ${mb}`);
      h.minblock = mb;
      h.maxdata = md;
      h.maxlen = maxlen ? maxlen - (maxlen % mb) : U32 - mb;
    },

    // The unaligned tail could not be served safely: it is cut off.
    async getSize(next, h) {
      const size = await next.getSize();
      return size - (size % h.minblock);
    },

    async blockSize(next, h) {
      const below = await next.blockSize();
      return { minimum: 1, preferred: Math.max(below?.preferred ?? 0, 4096, h.minblock), maximum: U32 - 1 };
    },

    pread(next, h, buf, offset, flags) {
      if ((offset % h.minblock) + (buf.length % h.minblock) === 0 && buf.length <= h.maxdata) {
        return next.pread(buf, offset, flags);
      }
      return splitRead(next, h, buf, offset, flags);
    },

    pwrite(next, h, buf, offset, flags) {
      if ((offset % h.minblock) + (buf.length % h.minblock) === 0 && buf.length <= h.maxdata) {
        if (lock.tryShared()) return next.pwrite(buf, offset, flags).finally(lock.releaseShared);
        return lock.shared(() => next.pwrite(buf, offset, flags));
      }
      return splitWrite(next, h, lock, buf, offset, flags);
    },

    trim(next, h, count, offset, flags) {
      if ((offset % h.minblock) + (count % h.minblock) === 0 && count <= h.maxlen) {
        if (lock.tryShared()) return next.trim(count, offset, flags).finally(lock.releaseShared);
        return lock.shared(() => next.trim(count, offset, flags));
      }
      return splitTrim(next, h, lock, count, offset, flags);
    },

    zero(next, h, count, offset, flags) {
      const aligned = (offset % h.minblock) + (count % h.minblock) === 0;
      if (aligned && count <= h.maxlen) {
        if (lock.tryShared()) return next.zero(count, offset, flags).finally(lock.releaseShared);
        return lock.shared(() => next.zero(count, offset, flags));
      }
      // Split zeroes are not fast: a later piece could only fail late.
      if (flags & FLAG_FAST_ZERO) throw new NbdError(NBD_ENOTSUP, "blocksize: fast zero of an unaligned or oversized range");
      return splitZero(next, h, lock, count, offset, flags);
    },

    extents(next, h, count, offset, flags) {
      const mb = h.minblock;
      if (mb === 1 && count <= h.maxlen) return next.extents(count, offset, flags);
      const start = offset - (offset % mb);
      const end = Math.ceil((offset + count) / mb) * mb;
      return alignedExtents(next, Math.min(end - start, h.maxlen), start, flags, mb).then((list) => {
        // Drop the bytes before the client's offset (within the first block).
        const head = offset - start;
        if (head === 0) return list;
        const [first, ...rest] = list;
        return [{ length: first!.length - head, type: first!.type }, ...rest];
      });
    },

    cache(next, h, count, offset, flags) {
      const mb = h.minblock;
      if ((offset % mb) + (count % mb) === 0 && count <= h.maxdata) return next.cache(count, offset, flags);
      return splitCache(next, h, count, offset, flags);
    },
  };
}

async function splitRead(next: Context, h: Handle, buf: Buffer, offset: number, flags: number): Promise<void> {
  const mb = h.minblock;
  let done = 0;
  let count = buf.length;
  const drop = offset % mb;
  if (drop) {
    const keep = Math.min(mb - drop, count);
    const bounce = Buffer.allocUnsafe(mb);
    await next.pread(bounce, offset - drop, flags);
    bounce.copy(buf, 0, drop, drop + keep);
    done += keep;
    offset += keep;
    count -= keep;
  }
  while (count >= mb) {
    const n = Math.min(h.maxdata, count - (count % mb));
    await next.pread(buf.subarray(done, done + n), offset, flags);
    done += n;
    offset += n;
    count -= n;
  }
  if (count) {
    const bounce = Buffer.allocUnsafe(mb);
    await next.pread(bounce, offset, flags);
    bounce.copy(buf, done, 0, count);
  }
}

/** FUA below an emulating layer: one flush at the end instead of one per piece. */
async function fuaPlan(next: Context, flags: number): Promise<{ flags: number; flush: boolean }> {
  if (flags & FLAG_FUA && (await next.canFua()) === "emulate") return { flags: flags & ~FLAG_FUA, flush: true };
  return { flags, flush: false };
}

/** Read the block at `at`, let `patch` change it, write it back; alone under the lock. */
function rmw(next: Context, lock: RwLock, mb: number, at: number, flags: number, patch: (block: Buffer) => void): Promise<void> {
  return lock.exclusive(async () => {
    const block = Buffer.allocUnsafe(mb);
    await next.pread(block, at, 0);
    patch(block);
    await next.pwrite(block, at, flags);
  });
}

async function splitWrite(next: Context, h: Handle, lock: RwLock, buf: Buffer, offset: number, flags0: number): Promise<void> {
  const mb = h.minblock;
  const { flags, flush } = await fuaPlan(next, flags0);
  let done = 0;
  let count = buf.length;
  const drop = offset % mb;
  if (drop) {
    const keep = Math.min(mb - drop, count);
    await rmw(next, lock, mb, offset - drop, flags, (b) => buf.copy(b, drop, 0, keep));
    done += keep;
    offset += keep;
    count -= keep;
  }
  while (count >= mb) {
    const n = Math.min(h.maxdata, count - (count % mb));
    const piece = buf.subarray(done, done + n);
    const at = offset;
    await lock.shared(() => next.pwrite(piece, at, flags));
    done += n;
    offset += n;
    count -= n;
  }
  if (count) {
    const tail = buf.subarray(done);
    await rmw(next, lock, mb, offset, flags, (b) => tail.copy(b, 0));
  }
  if (flush) await next.flush(0);
}

async function splitTrim(next: Context, h: Handle, lock: RwLock, count: number, offset: number, flags0: number): Promise<void> {
  const mb = h.minblock;
  const { flags, flush } = await fuaPlan(next, flags0);
  // Unaligned head and tail are not trimmed: trim is only advisory.
  const drop = offset % mb;
  if (drop) {
    const skip = Math.min(mb - drop, count);
    offset += skip;
    count -= skip;
  }
  count -= count % mb;
  while (count > 0) {
    const n = Math.min(h.maxlen, count);
    const at = offset;
    await lock.shared(() => next.trim(n, at, flags));
    offset += n;
    count -= n;
  }
  if (flush) await next.flush(0);
}

async function splitZero(next: Context, h: Handle, lock: RwLock, count: number, offset: number, flags0: number): Promise<void> {
  const mb = h.minblock;
  const { flags, flush } = await fuaPlan(next, flags0);
  const writeFlags = flags & FLAG_FUA;
  const drop = offset % mb;
  if (drop) {
    const keep = Math.min(mb - drop, count);
    await rmw(next, lock, mb, offset - drop, writeFlags, (b) => b.fill(0, drop, drop + keep));
    offset += keep;
    count -= keep;
  }
  while (count >= mb) {
    const n = Math.min(h.maxlen, count - (count % mb));
    const at = offset;
    await lock.shared(() => next.zero(n, at, flags));
    offset += n;
    count -= n;
  }
  if (count) {
    const tail = count;
    await rmw(next, lock, mb, offset, writeFlags, (b) => b.fill(0, 0, tail));
  }
  if (flush) await next.flush(0);
}

async function splitCache(next: Context, h: Handle, count: number, offset: number, flags: number): Promise<void> {
  const mb = h.minblock;
  const drop = offset % mb;
  offset -= drop;
  let remaining = Math.ceil((count + drop) / mb) * mb;
  while (remaining > 0) {
    const n = Math.min(h.maxdata, remaining);
    await next.cache(n, offset, flags);
    offset += n;
    remaining -= n;
  }
}
