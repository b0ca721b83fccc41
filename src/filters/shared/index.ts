// shared filter: every client connection uses one shared context of the
// layer below per (export name, read-only-ness), opened on first use (or at
// afterFork with shared-open=eager) and kept until unload. The refcounting,
// draining and the afterFork..unload window are the stack's shared handles
// (src/backend/shared-contexts.ts, run by the shared-handle machine).

import { parseBool } from "../../backend/size.js";
import type { Context, Filter, LowerBackend } from "../../backend/types.js";

interface SharedFilterHandle {
  /** This connection's reference to the shared context below. */
  ctx: Context;
  lower: LowerBackend;
}

export default function createFilter(): Filter<SharedFilterHandle> {
  let eager = false;
  let forceReadonly = false;
  /** The reference taken at afterFork (shared-open=eager), given back at cleanup. */
  let held: { lower: LowerBackend; ctx: Context } | null = null;

  return {
    name: "shared",
    version: "1.0.0",
    longname: "nbdstate shared filter",
    description: "All client connections share one context of the layer below per export.",
    configHelp:
      "shared-open=lazy|eager   Open the shared context on first use (default) or\n" +
      "                         at startup (the default export only).\n" +
      "shared-readonly=BOOL     Open the shared contexts read-only, for every\n" +
      "                         client (default false).",

    config(next, key, value) {
      switch (key) {
        case "shared-open":
          if (value !== "lazy" && value !== "eager") {
            throw new Error(`shared: shared-open must be 'lazy' or 'eager', not '${value}'`);
          }
          eager = value === "eager";
          return;
        case "shared-readonly":
          try {
            forceReadonly = parseBool(value);
          } catch (e) {
            throw new Error(`shared: shared-readonly: ${(e as Error).message}`);
          }
          return;
        default:
          return next(key, value);
      }
    },

    async afterFork(lower) {
      if (!eager) return;
      const readonly = forceReadonly;
      const name = await lower.defaultExport({ readonly, tls: false });
      if (name === null) throw new Error("shared: shared-open=eager: the layer below has no default export");
      held = { lower, ctx: await lower.open({ readonly, exportName: name, shared: true }) };
    },

    async cleanup() {
      // The shared context itself stays open until the layer below unloads.
      const h = held;
      held = null;
      if (h) await h.lower.close(h.ctx);
    },

    async open(a) {
      const ctx = await a.lower.open({ readonly: a.readonly || forceReadonly, exportName: a.exportName, shared: true });
      a.use(ctx);
      return { ctx, lower: a.lower };
    },

    async close(h) {
      await h.lower.close(h.ctx);
    },

    // One context below serves every connection: a write is visible to all
    // of them at once and a flush from any connection flushes it.
    canMultiConn() {
      return true;
    },
  };
}
