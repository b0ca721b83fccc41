// exitlast filter (nbdkit-exitlast-filter): shut the server down when the
// last client disconnects (not before the first one has come).

import type { Filter, ServerServices } from "../../backend/types.js";

export default function createFilter(): Filter<{ counted: boolean }> {
  let connections = 0;
  let server: ServerServices | null = null;

  return {
    name: "exitlast",
    version: "1.0.0",
    longname: "nbdstate exitlast filter",
    description: "Exit when the last client connection closes.",
    configHelp: "(no parameters of its own)",
    afterFork(_lower, services) {
      server = services;
    },
    async open(a) {
      await a.next(); // counted only once it is really open
      connections++;
      return { counted: true };
    },
    close(h) {
      if (h.counted && --connections === 0) {
        server?.debug("exitlast: exiting on last client connection");
        server?.shutdown("exitlast: the last client disconnected");
      }
    },
  };
}
