// extentlist filter (nbdkit-extentlist-filter): block status from a static
// list of extents in a file (extentlist=FILE) instead of from the plugin,
// for plugins that cannot tell (ssh, curl). Writes do not update the list,
// so it is meant for read-only use (-r). Format: parse.ts.

import { readFile } from "node:fs/promises";
import type { Extent, Filter } from "../../backend/types.js";
import { parseExtentList, type ListedExtent } from "./parse.js";

export default function createFilter(): Filter<void> {
  let file: string | undefined;
  let list: ListedExtent[] = [];

  /** Index of the listed extent containing offset (the list covers everything). */
  function find(offset: number): number {
    let lo = 0;
    let hi = list.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (list[mid]!.offset <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  return {
    name: "extentlist",
    version: "1.0.0",
    longname: "nbdstate extentlist filter",
    description: "Block status from a static list of extents in a file.",
    configHelp: "extentlist=FILENAME      File containing the list of extents (required).",

    config(next, key, value) {
      if (key !== "extentlist") return next(key, value);
      if (file !== undefined) throw new Error("extentlist: extentlist cannot appear twice");
      file = value;
    },

    configComplete(next) {
      if (file === undefined) throw new Error("extentlist: you must supply the extentlist parameter on the command line");
      return next();
    },

    async getReady() {
      let text: string;
      try {
        text = await readFile(file!, "utf8");
      } catch (e) {
        throw new Error(`extentlist: ${(e as Error).message}`);
      }
      list = parseExtentList(text, file!);
    },

    canExtents: () => true,

    extents(_next, _h, count, offset): Extent[] {
      const out: Extent[] = [];
      const end = offset + count;
      let pos = offset;
      for (let i = find(offset); pos < end && i < list.length; i++) {
        const e = list[i]!;
        const length = Math.min(e.offset + e.length, end) - pos;
        out.push({ length, type: e.type });
        pos += length;
      }
      return out;
    },
  };
}
