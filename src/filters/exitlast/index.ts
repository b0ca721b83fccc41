// exitlast filter (nbdkit-exitlast-filter): shut the server down when the
// last client disconnects (not before the first one has come).
//
// A client counts while it has an export open. A client that asks
// NBD_OPT_INFO (nbdinfo does) opens and closes a context before its
// NBD_OPT_GO, so the count may touch 0 while it is still negotiating: the
// shutdown waits a moment for a new open before it is asked for, as the
// server's shutdown closes connections that are still negotiating.

import type { Filter, ServerServices } from "../../backend/types.js";

/** How long the count must stay at 0 before the server is shut down (ms). */
export const GRACE_MS = 200;

export default function createFilter(): Filter<{ counted: boolean }> {
  let connections = 0;
  let server: ServerServices | null = null;
  let pending: NodeJS.Timeout | null = null;

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
      if (pending) clearTimeout(pending);
      pending = null;
      return { counted: true };
    },
    close(h) {
      if (!h.counted || --connections !== 0) return;
      pending = setTimeout(() => {
        pending = null;
        if (connections !== 0) return;
        server?.debug("exitlast: exiting on last client connection");
        server?.shutdown("exitlast: the last client disconnected");
      }, GRACE_MS);
    },
    unload() {
      if (pending) clearTimeout(pending);
    },
  };
}
