// nocache filter: change how NBD_CMD_CACHE is handled (nbdkit-nocache-filter).
//   cachemode=none     cache is not advertised (the default)
//   cachemode=emulate  cache is advertised and done by reading, whatever
//                      the plugin's own cache callback would do
//   cachemode=nop      cache is advertised and every request succeeds at once

import type { CacheMode, Filter } from "../../backend/types.js";
import { parseChoice } from "../kit/choice.js";

const MODES = ["none", "emulate", "nop"] as const;
type Mode = (typeof MODES)[number];

/** Reads for cachemode=emulate go into this scratch buffer; its bytes are never looked at. */
const SCRATCH = 1024 * 1024;
let scratch: Buffer | null = null;

export default function createFilter(): Filter {
  let mode: Mode = "none";

  const filter: Filter = {
    name: "nocache",
    version: "1.0.0",
    longname: "nbdstate nocache filter",
    description: "Disable, emulate or ignore client cache requests.",
    configHelp: "cachemode=<MODE>     Either 'none' (default), 'emulate', or 'nop'.",

    config(next, key, value) {
      if (key !== "cachemode") return next(key, value);
      mode = parseChoice("nocache", "cachemode", value, MODES, { "no-op": "nop" });
    },

    configComplete(next) {
      const advertised: CacheMode = mode === "none" ? "none" : mode === "emulate" ? "emulate" : "native";
      filter.canCache = () => advertised;
      // With none the server refuses cache requests itself: no callback.
      if (mode === "nop") filter.cache = () => {};
      if (mode === "emulate") filter.cache = cacheByReading;
      return next();
    },
  };
  return filter;
}

const cacheByReading: NonNullable<Filter["cache"]> = async (next, _h, count, offset) => {
  scratch ??= Buffer.allocUnsafe(SCRATCH);
  while (count > 0) {
    const n = Math.min(count, SCRATCH);
    await next.pread(scratch.subarray(0, n), offset, 0);
    offset += n;
    count -= n;
  }
};
