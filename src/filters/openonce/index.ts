// openonce filter (nbdkit-openonce-filter, nbdkit >= 1.44): the layer below
// is opened once per (export, read-only-ness, TLS) and that one context
// serves every client connection until the server exits. The refcounting
// and draining are the stack's shared contexts (lower.open({shared: true})).

import type { Context, Filter, LowerBackend } from "../../backend/types.js";

interface OpenOnceHandle {
  ctx: Context;
  lower: LowerBackend;
}

export default function createFilter(): Filter<OpenOnceHandle> {
  return {
    name: "openonce",
    version: "1.0.0",
    longname: "nbdstate openonce filter",
    description: "Open the layer below once per export; every client shares that one context.",
    configHelp: "(no parameters of its own: they go to the plugin)",

    async open(a) {
      const ctx = await a.lower.open({ readonly: a.readonly, exportName: a.exportName, tls: a.tls, shared: true });
      a.use(ctx);
      return { ctx, lower: a.lower };
    },

    // Gives back this connection's reference; the context itself stays open until unload.
    async close(h) {
      await h.lower.close(h.ctx);
    },

    // Every connection uses the same context below, so a write or flush by
    // one is seen by all: multi-conn holds whatever the plugin says.
    canMultiConn() {
      return true;
    },
  };
}
