// nofilter filter: passes everything through unchanged (nbdkit-nofilter-filter).
// It has no callbacks at all, so the stack binds every call straight to
// the layer below.

import type { Filter } from "../../backend/types.js";

export default function createFilter(): Filter {
  return {
    name: "nofilter",
    version: "1.0.0",
    longname: "nbdstate nofilter filter",
    configHelp: "No parameters of its own: every parameter goes to the plugin.",
    description: "A filter that passes every request through unchanged.",
  };
}
