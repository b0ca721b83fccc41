// Opening a chain of contexts down the stack, and the per-context
// lifecycle (open -> prepare -> finalize -> close) with nbdkit's order:
// open outer->inner, prepare inner->outer, finalize and close outer->inner.

import { createActor, type Actor } from "xstate";
import { contextMachine } from "../machines/context.js";
import { FilterContext } from "./filter-context.js";
import type { Layer } from "./layer.js";
import { PluginContext } from "./plugin-context.js";
import type { ConnectionInfo, Context, Filter, Plugin } from "./types.js";

/** One layer's opened handle, and the chain below it that it owns. */
export interface Opened {
  layer: Layer;
  handle: unknown;
  ctx: Context;
  /** The context below that this one opened with next() (null for the plugin or with use()). */
  lower: Opened | null;
  lifecycle: Actor<typeof contextMachine>;
}

function track(layer: Layer): Actor<typeof contextMachine> {
  const a = createActor(contextMachine, { inspect: layer.stack.inspect });
  a.subscribe({ error: () => {} });
  a.start();
  return a;
}

export async function openChain(
  layer: Layer, readonly: boolean, exportName: string, tls: boolean, connection?: ConnectionInfo,
): Promise<Opened> {
  const lifecycle = track(layer);
  try {
    if (layer.kind === "plugin") {
      const plugin = layer.impl as Plugin;
      const handle = await plugin.open(readonly, exportName, tls, connection);
      lifecycle.send({ type: "OPENED" });
      return { layer, handle, ctx: new PluginContext(plugin, handle, exportName, readonly), lower: null, lifecycle };
    }
    const filter = layer.impl as Filter;
    const below = layer.below!;
    let lower: Opened | null = null;
    let used: Context | null = null;
    const next = async (ro = readonly, name = exportName): Promise<Context> => {
      if (lower || used) throw new Error(`${filter.name}: open already has a context below`);
      lower = await openChain(below, ro, name, tls, connection);
      return lower.ctx;
    };
    let handle: unknown;
    try {
      handle = filter.open
        ? await filter.open({ readonly, exportName, tls, next, use: (c) => { used = c; }, lower: below.asLower(), connection })
        : undefined;
      if (!lower && !used) await next();
    } catch (err) {
      if (lower) await closeChain(lower);
      throw err;
    }
    lifecycle.send({ type: "OPENED" });
    const nextCtx = used ?? (lower as Opened | null)!.ctx;
    return { layer, handle, ctx: new FilterContext(filter, handle, nextCtx, exportName, readonly), lower, lifecycle };
  } catch (err) {
    lifecycle.send({ type: "OPEN_FAILED", error: String(err) });
    lifecycle.stop();
    throw err;
  }
}

/** Prepare inner->outer; a failure leaves the chain to be closed by the caller. */
export async function prepareChain(o: Opened): Promise<void> {
  try {
    // A failure below is this context's failed prepare too (its own prepare
    // is not called), so its lifecycle goes to closing and closeChain closes it.
    if (o.lower) await prepareChain(o.lower);
    if (o.layer.kind === "plugin") {
      const plugin = o.layer.impl as Plugin;
      if (plugin.prepare) await plugin.prepare(o.handle, o.ctx.readonly);
      await (o.ctx as PluginContext).loadCaps();
    } else {
      const filter = o.layer.impl as Filter;
      if (filter.prepare) await filter.prepare((o.ctx as FilterContext).next, o.handle, o.ctx.readonly);
    }
    o.lifecycle.send({ type: "PREPARED" });
  } catch (err) {
    o.lifecycle.send({ type: "PREPARE_FAILED", error: String(err) });
    throw err;
  }
}

/** Finalize outer->inner (only contexts that reached open). */
export async function finalizeChain(o: Opened): Promise<void> {
  if (o.lifecycle.getSnapshot().can({ type: "FINALIZE" })) {
    o.lifecycle.send({ type: "FINALIZE" });
    try {
      if (o.layer.kind === "plugin") {
        const plugin = o.layer.impl as Plugin;
        if (plugin.finalize) await plugin.finalize(o.handle);
      } else {
        const filter = o.layer.impl as Filter;
        if (filter.finalize) await filter.finalize((o.ctx as FilterContext).next, o.handle);
      }
      o.lifecycle.send({ type: "FINALIZED" });
    } catch (err) {
      o.lifecycle.send({ type: "FINALIZE_FAILED", error: String(err) });
      throw err;
    }
  }
  if (o.lower) await finalizeChain(o.lower);
}

/** Close outer->inner; never throws (a close error is recorded, the rest still closes). */
export async function closeChain(o: Opened): Promise<void> {
  const snap = o.lifecycle.getSnapshot();
  if (snap.status === "active" && snap.can({ type: "CLOSE" })) o.lifecycle.send({ type: "CLOSE" });
  if (o.lifecycle.getSnapshot().status === "active") {
    try {
      const impl = o.layer.impl as Plugin & Filter;
      if (impl.close) await impl.close(o.handle as never);
      o.lifecycle.send({ type: "CLOSED" });
    } catch (err) {
      o.lifecycle.send({ type: "CLOSE_FAILED", error: String(err) });
      o.layer.stack.log(`${o.layer.name}: close: ${String(err)}`);
    }
  }
  o.lifecycle.stop();
  if (o.lower) await closeChain(o.lower);
}

/** Open and prepare a chain from `layer` down; a failed prepare closes it again. */
export async function openPrepared(
  layer: Layer, readonly: boolean, exportName: string, tls: boolean, connection?: ConnectionInfo,
): Promise<Opened> {
  const opened = await openChain(layer, readonly, exportName, tls, connection);
  try {
    await prepareChain(opened);
  } catch (err) {
    await closeChain(opened);
    throw err;
  }
  return opened;
}

/** Finalize (unless the user of the context failed) and close, whatever finalize did. */
export async function finalizeAndClose(opened: Opened, finalize = true): Promise<void> {
  try {
    if (finalize) await finalizeChain(opened);
  } finally {
    await closeChain(opened);
  }
}
