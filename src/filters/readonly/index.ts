// readonly filter (nbdkit-readonly-filter, nbdkit >= 1.38): without
// readonly-file= the export is read-only; with readonly-file=PATH writes
// fail with EPERM while PATH exists and go through while it does not, so
// an export can be write-protected (and released) at run time.

import { existsSync } from "node:fs";
import { NbdError, type Filter } from "../../backend/types.js";
import { NBD_EPERM } from "../../protocol/constants.js";

export default function createFilter(): Filter {
  let file: string | null = null;

  const filter: Filter = {
    name: "readonly",
    version: "1.0.0",
    longname: "nbdstate readonly filter",
    description: "Make the plugin read-only, always or while a file exists.",
    configHelp: "readonly-file=PATH   Read-only while PATH exists (default: always read-only).",

    config(next, key, value) {
      if (key !== "readonly-file") return next(key, value);
      if (value === "") throw new Error("readonly: readonly-file must not be empty");
      file = value;
    },

    configComplete(next) {
      if (file === null) {
        // Always read-only: the export is advertised read-only, so the
        // server refuses writes itself and no data call needs a check.
        filter.canWrite = () => false;
      } else {
        Object.assign(filter, writeChecks(file));
      }
      return next();
    },
  };
  return filter;
}

/** Data callbacks that refuse writes while `file` exists (a stat per write, no await). */
function writeChecks(file: string): Pick<Filter, "pwrite" | "trim" | "zero"> {
  const refuse = () => new NbdError(NBD_EPERM, `readonly: ${file} exists: the export is read-only`);
  return {
    pwrite(next, _h, buf, offset, flags) {
      if (existsSync(file)) throw refuse();
      return next.pwrite(buf, offset, flags);
    },
    trim(next, _h, count, offset, flags) {
      if (existsSync(file)) throw refuse();
      return next.trim(count, offset, flags);
    },
    zero(next, _h, count, offset, flags) {
      if (existsSync(file)) throw refuse();
      return next.zero(count, offset, flags);
    },
  };
}
