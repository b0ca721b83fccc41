// fua filter: change how Forced Unit Access and flush are handled
// (nbdkit-fua-filter).
//   fuamode=none     FUA is not advertised (the default); flush as below
//   fuamode=emulate  FUA is advertised and done with a flush after the write
//   fuamode=native   FUA is advertised as native and passed down
//   fuamode=force    every write carries FUA; flush does nothing
//   fuamode=pass     nothing changes
//   fuamode=discard  FUA is dropped and flush does nothing (unsafe)
//
// The callbacks are chosen once at configComplete: a mode that does not
// touch a request has no callback for it.

import { FLAG_FUA, type Filter } from "../../backend/types.js";
import { parseChoice } from "../kit/choice.js";

const MODES = ["none", "emulate", "native", "force", "pass", "discard"] as const;
type Mode = (typeof MODES)[number];

export default function createFilter(): Filter {
  let mode: Mode = "none";

  const filter: Filter = {
    name: "fua",
    version: "1.0.0",
    longname: "nbdstate fua filter",
    description: "Modify flush and Forced Unit Access (FUA) handling.",
    configHelp:
      "fuamode=<MODE>       One of 'none' (default), 'emulate', 'native',\n" +
      "                       'force', 'pass', 'discard'.",

    config(next, key, value) {
      if (key !== "fuamode") return next(key, value);
      mode = parseChoice("fua", "fuamode", value, MODES);
    },

    configComplete(next) {
      Object.assign(filter, callbacksFor(mode));
      return next();
    },
  };
  return filter;
}

function callbacksFor(mode: Mode): Partial<Filter> {
  switch (mode) {
    case "pass":
      return {};
    case "none":
      // FUA is never advertised, so no request carries it.
      return { canFua: () => "none" };
    case "native":
      return { prepare: needsFua("native"), canFua: () => "native" };
    case "emulate":
      // FUA becomes a flush after the write; writes without FUA go down as they are.
      return {
        async prepare(next, _h, readonly) {
          if (!readonly && !(await next.canFlush())) throw new Error("fua: fuamode 'emulate' requires plugin flush support");
        },
        canFua: () => "emulate",
        pwrite(next, _h, buf, off, flags) {
          if (!(flags & FLAG_FUA)) return next.pwrite(buf, off, flags);
          return next.pwrite(buf, off, flags & ~FLAG_FUA).then(() => next.flush(0));
        },
        trim(next, _h, count, off, flags) {
          if (!(flags & FLAG_FUA)) return next.trim(count, off, flags);
          return next.trim(count, off, flags & ~FLAG_FUA).then(() => next.flush(0));
        },
        zero(next, _h, count, off, flags) {
          if (!(flags & FLAG_FUA)) return next.zero(count, off, flags);
          return next.zero(count, off, flags & ~FLAG_FUA).then(() => next.flush(0));
        },
      };
    case "force":
      return {
        prepare: needsFua("force"),
        canFua: () => "native",
        // Every write already persisted with FUA: nothing is left to flush.
        canFlush: () => true,
        flush: () => {},
        pwrite: (next, _h, buf, off, flags) => next.pwrite(buf, off, flags | FLAG_FUA),
        trim: (next, _h, count, off, flags) => next.trim(count, off, flags | FLAG_FUA),
        zero: (next, _h, count, off, flags) => next.zero(count, off, flags | FLAG_FUA),
      };
    case "discard":
      return {
        canFua: () => "native",
        canFlush: () => true,
        flush: () => {},
        pwrite: (next, _h, buf, off, flags) => next.pwrite(buf, off, flags & ~FLAG_FUA),
        trim: (next, _h, count, off, flags) => next.trim(count, off, flags & ~FLAG_FUA),
        zero: (next, _h, count, off, flags) => next.zero(count, off, flags & ~FLAG_FUA),
      };
  }
}

function needsFua(mode: Mode): NonNullable<Filter["prepare"]> {
  return async (next, _h, readonly) => {
    if (!readonly && (await next.canFua()) === "none") {
      throw new Error(`fua: fuamode '${mode}' requires plugin fua support`);
    }
  };
}
