// ddrescue filter (nbdkit-ddrescue-filter): serve a disk image recovered
// by GNU ddrescue read-only, where only the ranges its mapfile marks
// rescued ('+') can be read; a read touching any other byte fails with EIO,
// as the bad sectors of the original disk would.

import { readFileSync } from "node:fs";
import { NbdError, type Filter } from "../../backend/types.js";
import { NBD_EIO } from "../../protocol/constants.js";
import { covered, mergeRanges, parseMapfile, type Range } from "./mapfile.js";

export default function createFilter(): Filter<void> {
  const ranges: Range[] = [];
  let merged: Range[] = [];
  let given = false;

  return {
    name: "ddrescue",
    version: "1.0.0",
    longname: "nbdstate ddrescue mapfile filter",
    description: "Serve a ddrescue image: only the rescued ranges of its mapfile are readable.",
    configHelp: "ddrescue-mapfile=...     Specify ddrescue mapfile to use",

    config(next, key, value) {
      if (key !== "ddrescue-mapfile") return next(key, value);
      let text: string;
      try {
        text = readFileSync(value, "utf8");
      } catch (e) {
        throw new Error(`ddrescue: ${value}: ${(e as Error).message}`);
      }
      // Several mapfiles add up, as in nbdkit.
      try {
        ranges.push(...parseMapfile(text, value));
      } catch (e) {
        throw new Error(`ddrescue: ${(e as Error).message}`);
      }
      given = true;
    },

    configComplete(next) {
      if (!given) throw new Error("ddrescue: the ddrescue-mapfile parameter is required");
      merged = mergeRanges(ranges);
      return next();
    },

    // Read-only, whatever the layer below can do (writes must not reach it).
    canWrite: () => false,
    canCache: () => "none" as const,

    pread(next, _h, buf, offset, flags) {
      if (!covered(merged, offset, buf.length)) {
        throw new NbdError(NBD_EIO, `ddrescue: [${offset}, +${buf.length}) is not all rescued data`);
      }
      return next.pread(buf, offset, flags);
    },
  };
}
