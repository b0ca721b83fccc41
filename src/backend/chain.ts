// The runner of the context machine (src/machines/context.ts): one actor
// per opened handle of one layer. The machine sequences each handle's
// steps; the effects provided here do them, and reach the layer below only
// through that layer's own context actor. That is how the order across the
// chain comes out as nbdkit's: open outer->inner (a filter's open calls
// next, which opens the layer below), prepare inner->outer (a layer's
// prepare first prepares the one below), finalize then close outer->inner.

import { createActor, fromPromise, waitFor, type Actor, type InspectionEvent } from "xstate";
import { assertProvided, SystemScopes } from "../machines/effects.js";
import { contextMachine } from "../machines/context.js";
import { BackendContext } from "./context.js";
import type { LayerOps, OpenRequest } from "./layer-ops.js";
import type { ConnectionInfo, Context, LowerBackend } from "./types.js";

/** What the chain needs of a layer (src/backend/layer.ts's Layer). */
export interface LayerNode {
  readonly name: string;
  readonly ops: LayerOps;
  readonly below: LayerNode | null;
  readonly inspect?: (ev: InspectionEvent) => void;
  log(msg: string): void;
  asLower(): LowerBackend;
}

/** The handle each context actor runs for, by the actor's system. */
const runners = new SystemScopes<Opened>("context machine handle");
let provided: typeof contextMachine | undefined;

/**
 * The context machine with its effects, provided once for every handle (a
 * machine provided per handle cost about 19 KiB of heap each): the effects
 * find their handle through the actor's system.
 */
function providedContextMachine(): typeof contextMachine {
  provided ??= assertProvided(
    contextMachine.provide({
      actors: {
        open: fromPromise(({ system }) => runners.of({ system }).doOpen()),
        prepare: fromPromise(({ system }) => runners.of({ system }).doPrepare()),
        finalize: fromPromise(({ system }) => runners.of({ system }).doFinalize()),
        close: fromPromise(({ system }) => runners.of({ system }).doClose()),
      },
    }),
  );
  return provided;
}

/** One layer's opened handle: its context actor, its context, and the handle below it opened with next(). */
export class Opened {
  readonly actor: Actor<typeof contextMachine>;
  /** Set once open() returned. */
  ctx!: BackendContext;
  /** The handle below opened with next() (null for the plugin, or when the filter bound its own with use()). */
  lower: Opened | null = null;
  private openError: unknown;
  /** The error object of the last failed prepare or finalize (the machine keeps only its text). */
  stepError: unknown;

  constructor(readonly layer: LayerNode, readonly req: OpenRequest) {
    this.actor = createActor(providedContextMachine(), { input: { layer: layer.name }, inspect: layer.inspect });
    // Each handle's actor is a root with a system of its own: that is how the shared effects find this handle.
    runners.set(this.actor.system, this);
    this.actor.subscribe({ error: (e) => layer.log(`${layer.name}: context machine: ${String(e)}`) });
  }

  get state(): string {
    return String(this.actor.getSnapshot().value);
  }

  /** The first error of this handle's steps. */
  get error(): string | undefined {
    return this.actor.getSnapshot().context.error;
  }

  // ---- the effects

  /** @internal the context machine's effect */
  async doOpen(): Promise<void> {
    const { layer, req } = this;
    let used: Context | null = null;
    const below = layer.below;
    const open = () =>
      layer.ops.open(
        req,
        below && {
          lower: below.asLower(),
          next: async (readonly, exportName) => {
            if (this.lower || used) throw new Error(`${layer.name}: open already has a context below`);
            this.lower = await openContext(below, { ...req, readonly, exportName });
            return this.lower.ctx;
          },
          use: (ctx) => {
            if (this.lower || used) throw new Error(`${layer.name}: open already has a context below`);
            used = ctx;
          },
        },
      );
    try {
      const handle = await open();
      // A filter whose open neither called next nor use gets the default context below.
      if (below && !this.lower && !used) this.lower = await openContext(below, req);
      const next = below ? (used ?? this.lower!.ctx) : null;
      this.ctx = new BackendContext(layer.ops, handle, next, req.exportName, req.readonly);
    } catch (err) {
      this.openError = err;
      if (this.lower) await closeContext(this.lower);
      this.lower = null;
      throw err;
    }
  }

  /** @internal the context machine's effect */
  async doPrepare(): Promise<void> {
    try {
      // The layer below first: a failure there is this handle's failed prepare too.
      if (this.lower) await prepareContext(this.lower);
      await this.layer.ops.prepare(this.ctx);
      await this.ctx.loadCaps();
    } catch (err) {
      this.stepError = err;
      throw err;
    }
  }

  /** @internal the context machine's effect */
  async doFinalize(): Promise<void> {
    try {
      await this.layer.ops.finalize(this.ctx);
      if (this.lower) await finalizeContext(this.lower);
    } catch (err) {
      this.stepError = err;
      throw err;
    }
  }

  /** @internal the context machine's effect */
  async doClose(): Promise<void> {
    try {
      await this.layer.ops.close(this.ctx);
    } catch (err) {
      this.layer.log(`${this.layer.name}: close: ${err instanceof Error ? err.message : String(err)}`);
      throw err;
    } finally {
      // Below is closed whatever this layer's close did.
      if (this.lower) await closeContext(this.lower);
    }
  }

  /** Why open failed (the original error, not the machine's text). */
  get openFailure(): unknown {
    return this.openError;
  }
}

const settledAfterOpen = (s: { value: unknown; status: string }) => s.status !== "active" || s.value === "opened";
const settledAfterPrepare = (s: { value: unknown }) => s.value === "open" || s.value === "unprepared";
const settledAfterFinalize = (s: { value: unknown }) => s.value === "finalized";
const done = (s: { status: string }) => s.status === "done";

/** Open a handle of `layer` (and, through its open, the chain below): resolves once open() returned. */
export async function openContext(layer: LayerNode, req: OpenRequest): Promise<Opened> {
  const o = new Opened(layer, req);
  o.actor.start();
  const s = await waitFor(o.actor, settledAfterOpen);
  if (s.value !== "opened") {
    o.actor.stop();
    throw o.openFailure ?? new Error(o.error ?? `${layer.name}: open failed`);
  }
  return o;
}

/** Prepare a handle (inner->outer through the chain); on failure the handle is left to be closed. */
export async function prepareContext(o: Opened): Promise<void> {
  if (o.state === "open") return;
  o.stepError = undefined;
  o.actor.send({ type: "PREPARE" });
  await waitFor(o.actor, settledAfterPrepare);
  if (o.state !== "open") throw o.stepError ?? new Error(o.error ?? `${o.layer.name}: prepare failed`);
}

/** Finalize a prepared handle and the chain below (outer->inner); its error is thrown once it settled. */
export async function finalizeContext(o: Opened): Promise<void> {
  if (o.state !== "open") return;
  o.stepError = undefined;
  o.actor.send({ type: "FINALIZE" });
  await waitFor(o.actor, settledAfterFinalize);
  if (o.stepError !== undefined) throw o.stepError;
}

/** Close a handle and the chain below (outer->inner); never throws (errors are logged and kept). */
export async function closeContext(o: Opened): Promise<void> {
  const snap = o.actor.getSnapshot();
  if (snap.status !== "active") return;
  if (snap.can({ type: "CLOSE" })) o.actor.send({ type: "CLOSE" });
  await waitFor(o.actor, done);
  o.actor.stop();
}

/** Open and prepare a chain from `layer` down; a failed prepare closes it again. */
export async function openPrepared(layer: LayerNode, req: OpenRequest): Promise<Opened> {
  const o = await openContext(layer, req);
  try {
    await prepareContext(o);
  } catch (err) {
    await closeContext(o);
    throw err;
  }
  return o;
}

/** Finalize (unless the user of the context failed) and close, whatever finalize did. */
export async function finalizeAndClose(o: Opened, finalize = true): Promise<void> {
  try {
    if (finalize) await finalizeContext(o);
  } finally {
    await closeContext(o);
  }
}

export type { ConnectionInfo };
