// blocksize-policy filter: advertise block size constraints and choose
// what happens to requests that break them (nbdkit-blocksize-policy-filter).
//   blocksize-minimum=N, blocksize-preferred=N, blocksize-maximum=N
//   blocksize-error-policy=allow|error|strict-error
//   blocksize-write-disconnect=N   (nbdkit >= 1.34)
// With the allow policy and no write-disconnect there are no data
// callbacks: only the advertised sizes change.

import { parseSize } from "../../backend/size.js";
import { NbdError, type BlockSize, type ConnectionInfo, type Context, type Filter } from "../../backend/types.js";
import { NBD_EINVAL, NBD_ESHUTDOWN } from "../../protocol/constants.js";
import { parseChoice } from "../kit/choice.js";

const POLICIES = ["allow", "error", "strict-error"] as const;
type Policy = (typeof POLICIES)[number];
const U32 = 0x1_0000_0000;

interface Handle {
  connection: ConnectionInfo | undefined;
  /** The constraints this connection is told (null: none), worked out at prepare. */
  limits: BlockSize | null;
  /** The export's size (for the short last block under the error policy). */
  size: number;
}

export default function createFilter(): Filter<Handle> {
  let minimum = 0;
  let preferred = 0;
  let maximum = 0;
  let disconnect = 0;
  let policy: Policy = "allow";

  function parse(key: string, value: string): number {
    let n: number;
    try {
      n = parseSize(value);
    } catch (e) {
      throw new Error(`blocksize-policy: ${key}: could not parse ${value}: ${(e as Error).message}`);
    }
    if (n >= U32) throw new Error(`blocksize-policy: ${key}: ${value} is too large`);
    return n;
  }

  /** What is advertised: the command line's values over the layer below's. */
  async function computeLimits(next: Context): Promise<BlockSize | null> {
    if (minimum && preferred && maximum) return { minimum, preferred, maximum };
    const below = await next.blockSize();
    if (!minimum && !preferred && !maximum) return below;
    let r: BlockSize;
    if (!below) {
      const min = minimum || 1;
      r = {
        minimum: min,
        preferred: preferred || 4096,
        maximum: maximum || (disconnect ? disconnect - (disconnect % min) : U32 - 1),
      };
    } else {
      r = { minimum: minimum || below.minimum, preferred: preferred || below.preferred, maximum: maximum || below.maximum };
    }
    if (r.minimum > r.preferred || r.preferred > r.maximum) {
      throw new Error(
        `blocksize-policy: computed block size values are invalid, minimum ${r.minimum} > preferred ${r.preferred} ` +
          `or preferred > maximum ${r.maximum}`,
      );
    }
    return r;
  }

  /** EINVAL for a request that breaks the advertised constraints (error policies). */
  function check(h: Handle, what: string, data: boolean, count: number, offset: number): void {
    const l = h.limits;
    if (!l) return;
    const min = l.minimum;
    // error (not strict-error): the last, short block of an export whose size
    // is not a multiple of the minimum may be reached with a short request.
    let checked = count;
    if (policy === "error" && count % min && offset + count === h.size) checked = count + min - (count % min);
    let why: string | null = null;
    if (checked < min) why = `count ${count} is smaller than minimum size ${min}`;
    else if (data && checked > l.maximum) why = `count ${count} is larger than maximum size ${l.maximum}`;
    else if (checked % min) why = `count ${count} is not a multiple of minimum size ${min}`;
    else if (offset % min) why = `offset ${offset} is not aligned to a multiple of minimum size ${min}`;
    if (why) throw new NbdError(NBD_EINVAL, `blocksize-policy: client ${what} request rejected: ${why}`);
  }

  const filter: Filter<Handle> = {
    name: "blocksize-policy",
    version: "1.0.0",
    longname: "nbdstate blocksize policy filter",
    description: "Set block size constraints and the error policy for requests that break them.",
    configHelp:
      "blocksize-error-policy=allow|error|strict-error  What to do with bad requests.\n" +
      "blocksize-minimum=N            Advertise minimum block size.\n" +
      "blocksize-preferred=N          Advertise preferred block size.\n" +
      "blocksize-maximum=N            Advertise maximum block size.\n" +
      "blocksize-write-disconnect=N   Disconnect a client writing more than N bytes.",

    config(next, key, value) {
      switch (key) {
        case "blocksize-error-policy":
          policy = parseChoice("blocksize-policy", key, value, POLICIES);
          return;
        case "blocksize-minimum":
          minimum = parse(key, value);
          return;
        case "blocksize-preferred":
          preferred = parse(key, value);
          return;
        case "blocksize-maximum":
          maximum = parse(key, value);
          return;
        case "blocksize-write-disconnect":
          disconnect = parse(key, value);
          return;
        default:
          return next(key, value);
      }
    },

    configComplete(next) {
      const pow2 = (n: number) => (n & (n - 1)) === 0;
      if (minimum) {
        if (!pow2(minimum)) throw new Error("blocksize-policy: blocksize-minimum must be a power of 2");
        if (minimum > 65536) throw new Error("blocksize-policy: blocksize-minimum must be <= 64K");
      }
      if (preferred) {
        if (!pow2(preferred)) throw new Error("blocksize-policy: blocksize-preferred must be a power of 2");
        if (preferred < 512 || preferred > 32 * 1024 * 1024) {
          throw new Error("blocksize-policy: blocksize-preferred must be between 512 and 32M");
        }
      }
      if (minimum && maximum && maximum !== U32 - 1 && maximum % minimum !== 0) {
        throw new Error("blocksize-policy: blocksize-maximum must be -1 or a multiple of blocksize-minimum");
      }
      if (minimum && preferred && minimum > preferred) {
        throw new Error("blocksize-policy: blocksize-minimum must be <= blocksize-preferred");
      }
      if (preferred && maximum && preferred > maximum) {
        throw new Error("blocksize-policy: blocksize-preferred must be <= blocksize-maximum");
      }
      if (minimum && disconnect && disconnect <= minimum) {
        throw new Error("blocksize-policy: blocksize-write-disconnect must be larger than blocksize-minimum");
      }
      if (policy !== "allow") Object.assign(filter, checkedCallbacks());
      if (disconnect) filter.pwrite = disconnecting(filter.pwrite);
      return next();
    },

    open(a) {
      return { connection: a.connection, limits: null, size: 0 };
    },
    // Worked out once, so a bad combination fails the connection here.
    async prepare(next, h) {
      h.limits = await computeLimits(next);
      h.size = await next.getSize();
    },
    blockSize(_next, h) {
      return h.limits;
    },
  };

  function checkedCallbacks(): Partial<Filter<Handle>> {
    return {
      pread(next, h, buf, off, fl) {
        check(h, "pread", true, buf.length, off);
        return next.pread(buf, off, fl);
      },
      pwrite(next, h, buf, off, fl) {
        check(h, "pwrite", true, buf.length, off);
        return next.pwrite(buf, off, fl);
      },
      zero(next, h, count, off, fl) {
        check(h, "zero", false, count, off);
        return next.zero(count, off, fl);
      },
      trim(next, h, count, off, fl) {
        check(h, "trim", false, count, off);
        return next.trim(count, off, fl);
      },
      cache(next, h, count, off, fl) {
        check(h, "cache", false, count, off);
        return next.cache(count, off, fl);
      },
      extents(next, h, count, off, fl) {
        check(h, "extents", false, count, off);
        return next.extents(count, off, fl);
      },
    };
  }

  /** pwrite that first cuts off a client writing more than `disconnect` bytes. */
  function disconnecting(inner: Filter<Handle>["pwrite"]): NonNullable<Filter<Handle>["pwrite"]> {
    return (next, h, buf, off, fl) => {
      if (buf.length > disconnect) {
        h.connection?.disconnect(true);
        throw new NbdError(NBD_ESHUTDOWN, "blocksize-policy: disconnecting client due to oversize write request");
      }
      return inner ? inner(next, h, buf, off, fl) : next.pwrite(buf, off, fl);
    };
  }

  return filter;
}
