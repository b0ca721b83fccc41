// rotational filter: set whether the export claims to be a spinning disk
// (nbdkit-rotational-filter, nbdkit >= 1.40). Only isRotational changes.

import { parseBool } from "../../backend/size.js";
import type { Filter } from "../../backend/types.js";

export default function createFilter(): Filter {
  let rotational = true;
  return {
    name: "rotational",
    version: "1.0.0",
    longname: "nbdstate rotational filter",
    description: "Set whether the export is rotational (NBD_FLAG_ROTATIONAL).",
    configHelp: "rotational=true|false  Advertise a rotational disk (default true).",

    config(next, key, value) {
      if (key !== "rotational") return next(key, value);
      try {
        rotational = parseBool(value);
      } catch (e) {
        throw new Error(`rotational: rotational: ${(e as Error).message}`);
      }
    },
    isRotational() {
      return rotational;
    },
  };
}
