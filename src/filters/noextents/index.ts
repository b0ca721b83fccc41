// noextents filter: the export looks fully allocated (nbdkit-noextents-filter).
// Block status answers one data extent for the whole request, and sparse
// reads report no holes; nothing else changes.

import type { Filter } from "../../backend/types.js";

export default function createFilter(): Filter {
  return {
    name: "noextents",
    version: "1.0.0",
    longname: "nbdstate noextents filter",
    configHelp: "No parameters of its own: every parameter goes to the plugin.",
    description: "Disable extents (block status) of the underlying plugin.",

    canExtents() {
      return false;
    },
    extents(_next, _h, count) {
      return [{ length: count, type: 0 }];
    },
    // Plain reads pass straight through (no pread here); a sparse read is
    // answered as data, so holes do not leak out that way either.
    async preadSparse(next, _h, buf, offset, flags) {
      await next.pread(buf, offset, flags);
      return [{ length: buf.length, hole: false }];
    },
  };
}
