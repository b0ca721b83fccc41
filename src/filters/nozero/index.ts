// nozero filter: change how NBD_CMD_WRITE_ZEROES is handled
// (nbdkit-nozero-filter).
//   zeromode=none      zeroing is not advertised (the default)
//   zeromode=emulate   zeroing is advertised and done by writing zeroes
//   zeromode=notrim    zero requests go down without FLAG_MAY_TRIM
//   zeromode=plugin    zero requests go down unchanged
//   fastzeromode=default|none|slow|ignore  how fast zero is advertised/handled
//
// Each mode's callbacks are chosen once at configComplete, so a mode that
// passes requests through has no zero callback at all.

import { FLAG_FAST_ZERO, FLAG_FUA, FLAG_MAY_TRIM, NbdError, type Context, type Filter } from "../../backend/types.js";
import { NBD_ENOTSUP } from "../../protocol/constants.js";
import { parseChoice } from "../kit/choice.js";
import { ZERO_CHUNK, zeros } from "../kit/zeros.js";

const ZERO_MODES = ["none", "emulate", "notrim", "plugin"] as const;
const FAST_MODES = ["default", "none", "slow", "ignore"] as const;
type ZeroMode = (typeof ZERO_MODES)[number];
type FastMode = (typeof FAST_MODES)[number];

export default function createFilter(): Filter {
  let zeromode: ZeroMode = "none";
  let fastzeromode: FastMode = "default";

  const filter: Filter = {
    name: "nozero",
    version: "1.0.0",
    longname: "nbdstate nozero filter",
    description: "Disable, emulate or adjust write zeroes requests.",
    configHelp:
      "zeromode=<MODE>      One of 'none' (default), 'emulate', 'notrim', 'plugin'.\n" +
      "fastzeromode=<MODE>  One of 'default', 'none', 'slow', 'ignore'.",

    config(next, key, value) {
      if (key === "zeromode") zeromode = parseChoice("nozero", "zeromode", value, ZERO_MODES);
      else if (key === "fastzeromode") fastzeromode = parseChoice("nozero", "fastzeromode", value, FAST_MODES);
      else return next(key, value);
    },

    configComplete(next) {
      Object.assign(filter, callbacksFor(zeromode, fastzeromode));
      return next();
    },
  };
  return filter;
}

function callbacksFor(zeromode: ZeroMode, fast: FastMode): Partial<Filter> {
  if (zeromode === "none") return { canZero: () => false, canFastZero: () => false };

  if (zeromode === "emulate") {
    return {
      canZero: () => true,
      // Emulated zeroes are never fast, so fast zero fails at once
      // (default, slow) or is done anyway (ignore).
      canFastZero: () => fast !== "none",
      zero: (next, _h, count, offset, flags) => {
        if (flags & FLAG_FAST_ZERO && fast !== "ignore") {
          throw new NbdError(NBD_ENOTSUP, "nozero: fast zero is not supported (zeromode=emulate)");
        }
        return writeZeroes(next, count, offset, flags);
      },
    };
  }

  // notrim and plugin: the layer below must zero.
  const cb: Partial<Filter> = {
    async prepare(next, _h, readonly) {
      if (!readonly && !(await next.canZero())) {
        throw new Error(`nozero: zeromode '${zeromode}' requires plugin zero support`);
      }
    },
  };
  if (fast !== "default") cb.canFastZero = () => fast !== "none";
  const dropTrim = zeromode === "notrim";
  const slow = fast === "slow";
  const ignore = fast === "ignore";
  if (dropTrim || slow || ignore) {
    cb.zero = (next, _h, count, offset, flags) => {
      if (flags & FLAG_FAST_ZERO) {
        if (slow) throw new NbdError(NBD_ENOTSUP, "nozero: fast zero is not supported (fastzeromode=slow)");
        if (ignore) flags &= ~FLAG_FAST_ZERO;
      }
      if (dropTrim) flags &= ~FLAG_MAY_TRIM;
      return next.zero(count, offset, flags);
    };
  }
  return cb;
}

/**
 * Zeroes written with pwrite, in chunks. With FUA: below a native-FUA
 * layer every chunk carries it; otherwise only the last, whose FUA (an
 * emulated flush) covers the chunks before it.
 */
async function writeZeroes(next: Context, count: number, offset: number, flags: number): Promise<void> {
  const fua = (flags & FLAG_FUA) !== 0;
  const eachFua = fua && (await next.canFua()) === "native";
  while (count > 0) {
    const n = Math.min(count, ZERO_CHUNK);
    await next.pwrite(zeros(n), offset, eachFua || (fua && n === count) ? FLAG_FUA : 0);
    offset += n;
    count -= n;
  }
}
