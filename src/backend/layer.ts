// One layer of the stack (a plugin or a filter, adapted to LayerOps) and
// the runner of its lifecycle machine (src/machines/backend-lifecycle.ts):
// the machine sequences load .. unload, the effects provided here call the
// layer's callbacks. Also the view filters above get (LowerBackend):
// listing, and from afterFork until cleanup, contexts of their own.

import { createActor, fromPromise, waitFor, type Actor, type AnyActorRef, type InspectionEvent } from "xstate";
import { backendLifecycleMachine, type BackendLifecycleEvent } from "../machines/backend-lifecycle.js";
import { assertProvided } from "../machines/effects.js";
import { MAX_STRING } from "../protocol/constants.js";
import { isNbdString } from "../protocol/strings.js";
import { closeContext, finalizeAndClose, openPrepared, type LayerNode, type Opened } from "./chain.js";
import type { LayerOps } from "./layer-ops.js";
import type { SharedContexts } from "./shared-contexts.js";
import type { Context, ExportEntry, ListParams, LowerBackend, OpenOptions, PeerInfo, ServerServices } from "./types.js";

/** At most this many exports in one listing (a listing must not exhaust memory). */
export const MAX_EXPORTS = 10000;

/** What a layer is given by its stack: logging, inspection, services, the shared contexts. */
export interface LayerEnv {
  log(msg: string): void;
  inspect?: (ev: InspectionEvent) => void;
  services: ServerServices;
  shared: SharedContexts;
}

type State = string;

export class Layer implements LayerNode {
  readonly lifecycle: Actor<typeof backendLifecycleMachine>;
  /** Contexts filters above opened for themselves (exclusive). */
  private owned = new Map<Context, Opened>();
  private lowerView: LowerBackend | null = null;
  /** The error object of the last failed step (the machine keeps its text). */
  private stepError: unknown;

  constructor(
    readonly ops: LayerOps,
    readonly below: Layer | null,
    private readonly env: LayerEnv,
  ) {
    const below_ = below;
    const guard = (fn: () => Promise<void>) =>
      fromPromise(async () => {
        try {
          await fn();
        } catch (err) {
          this.stepError = attribute(ops.name, err);
          throw this.stepError;
        }
      });
    const machine = assertProvided(
      backendLifecycleMachine.provide({
        actors: {
          load: guard(() => ops.load()),
          config: fromPromise<void, { key: string; value: string }>(async ({ input }) => {
            try {
              await ops.config(input.key, input.value, below_ ? (k, v) => below_.config(k, v) : null);
            } catch (err) {
              this.stepError = attribute(ops.name, err);
              throw this.stepError;
            }
          }),
          configComplete: guard(async () => {
            await ops.configComplete(below_ ? () => below_.configComplete() : null);
            // A filter whose config_complete forgot next: the layer below still completes.
            if (below_ && below_.state === "loaded") await below_.configComplete();
          }),
          getReady: guard(() => ops.getReady()),
          afterFork: guard(() => ops.afterFork(below_ ? below_.asLower() : null, env.services)),
          cleanup: guard(async () => {
            try {
              await ops.cleanup();
            } catch (err) {
              env.log(`${ops.name}: cleanup: ${err instanceof Error ? err.message : String(err)}`);
              throw err;
            } finally {
              // No layer is cleaned up while a context into it is still open.
              if (below_) {
                await below_.closeLeftovers();
                await env.shared.unload(below_);
              }
            }
          }),
          unload: guard(async () => {
            try {
              await ops.unload();
            } catch (err) {
              env.log(`${ops.name}: unload: ${err instanceof Error ? err.message : String(err)}`);
              throw err;
            }
          }),
        },
      }),
    );
    this.lifecycle = createActor(machine, { inspect: env.inspect, input: { layer: ops.name } });
    this.lifecycle.subscribe({ error: (err) => env.log(`${ops.name}: lifecycle error: ${String(err)}`) });
    this.lifecycle.start();
  }

  get name(): string {
    return this.ops.name;
  }
  get kind(): "plugin" | "filter" {
    return this.ops.kind;
  }
  get inspect(): ((ev: InspectionEvent) => void) | undefined {
    return this.env.inspect;
  }
  get state(): State {
    return String(this.lifecycle.getSnapshot().value);
  }
  get lifecycleRef(): AnyActorRef {
    return this.lifecycle;
  }
  log(msg: string): void {
    this.env.log(msg);
  }

  /** True from afterFork until cleanup: when filters may open contexts into this layer. */
  get running(): boolean {
    return this.state === "running";
  }

  /** Send a lifecycle event and wait for one of `until`; a failure throws the step's error. */
  private async step(ev: BackendLifecycleEvent, until: State[]): Promise<void> {
    const snap = this.lifecycle.getSnapshot();
    if (snap.status !== "active" || !snap.can(ev)) {
      throw new Error(`${this.name}: ${ev.type} is not possible in state ${this.state}`);
    }
    this.stepError = undefined;
    this.lifecycle.send(ev);
    const s = await waitFor(this.lifecycle, (x) => x.status !== "active" || until.includes(String(x.value)) || x.value === "failed");
    if (s.value === "failed" && !until.includes("failed")) {
      throw this.stepError ?? new Error(s.context.error ?? `${this.name}: ${ev.type} failed`);
    }
  }

  load(): Promise<void> {
    return this.step({ type: "LOAD" }, ["loaded"]);
  }
  config(key: string, value: string): Promise<void> {
    return this.step({ type: "CONFIG", key, value }, ["loaded"]);
  }
  configComplete(): Promise<void> {
    return this.step({ type: "CONFIG_COMPLETE" }, ["configured"]);
  }
  getReady(): Promise<void> {
    return this.step({ type: "GET_READY" }, ["ready"]);
  }
  afterFork(): Promise<void> {
    return this.step({ type: "AFTER_FORK" }, ["running"]);
  }
  /** cleanup (if the layer got as far as running); errors are logged, never thrown. */
  async cleanup(): Promise<void> {
    if (this.state === "running") await this.step({ type: "CLEANUP" }, ["cleanedUp"]).catch(() => {});
  }
  /** unload, from any state that has one; errors are logged, never thrown. */
  async unload(): Promise<void> {
    const snap = this.lifecycle.getSnapshot();
    if (snap.status !== "active") return;
    if (snap.can({ type: "UNLOAD" })) await this.step({ type: "UNLOAD" }, ["unloaded"]).catch(() => {});
  }

  preconnect(readonly: boolean, peer: PeerInfo): Promise<void> {
    const below = this.below;
    return this.ops.preconnect(below ? (ro) => below.preconnect(ro, peer) : null, readonly, peer);
  }

  async listExports(p: ListParams): Promise<ExportEntry[]> {
    return checkList(this.name, await this.ops.listExports(this.below ? this.below.asLower() : null, p));
  }

  async defaultExport(p: ListParams): Promise<string | null> {
    const name = await this.ops.defaultExport(this.below ? this.below.asLower() : null, p);
    // As nbdkit: a default name that is not a valid NBD string is ignored: there is no default export.
    if (typeof name !== "string" || !isNbdString(name)) return null;
    return name;
  }

  /** Metadata contexts (besides base:allocation) this layer serves for an export. */
  async metaContexts(exportName: string): Promise<string[]> {
    const list = await this.ops.metaContexts(this.below ? this.below.asLower() : null, exportName);
    if (!Array.isArray(list) || !list.every((n) => typeof n === "string" && isNbdString(n) && /^[^:]+:./.test(n))) {
      throw new Error(`${this.name}: metaContexts must return context names of the form NAMESPACE:NAME`);
    }
    return [...new Set(list)].filter((n) => n !== "base:allocation");
  }

  /** The view of this layer that the filter above it gets. */
  asLower(): LowerBackend {
    if (this.lowerView) return this.lowerView;
    this.lowerView = {
      name: this.name,
      listExports: (p) => this.listExports(p),
      defaultExport: (p) => this.defaultExport(p),
      open: (o) => this.openOwned(o),
      close: (c) => this.closeOwned(c),
      metaContexts: (n) => this.metaContexts(n),
    };
    return this.lowerView;
  }

  private async openOwned(o: OpenOptions): Promise<Context> {
    if (!this.running) {
      throw new Error(`${this.name}: a filter may open its own context only from afterFork until unload (layer is ${this.state})`);
    }
    if (o.shared) return this.env.shared.acquire(this, o);
    const opened = await openPrepared(this, { readonly: o.readonly ?? false, exportName: o.exportName ?? "", tls: o.tls ?? false });
    this.owned.set(opened.ctx, opened);
    return opened.ctx;
  }

  private async closeOwned(ctx: Context): Promise<void> {
    if (this.env.shared.owns(ctx)) return this.env.shared.release(ctx);
    const opened = this.owned.get(ctx);
    if (!opened) throw new Error(`${this.name}: close of a context this layer did not open (or closed twice)`);
    this.owned.delete(ctx);
    await finalizeAndClose(opened);
  }

  /** Close what filters above left open, before this layer is cleaned up. */
  async closeLeftovers(): Promise<void> {
    for (const [ctx, opened] of [...this.owned]) {
      this.owned.delete(ctx);
      await finalizeAndClose(opened).catch((e) => this.env.log(String(e)));
    }
  }

  /** Contexts filters above hold open in this layer (for the status page). */
  get ownedCount(): number {
    return this.owned.size;
  }
}

function checkList(layer: string, list: ExportEntry[]): ExportEntry[] {
  if (!Array.isArray(list)) throw new Error(`${layer}: listExports did not return a list`);
  if (list.length > MAX_EXPORTS) throw new Error(`${layer}: listExports returned more than ${MAX_EXPORTS} exports`);
  const seen = new Set<string>();
  for (const e of list) {
    if (typeof e?.name !== "string") throw new Error(`${layer}: listExports returned an entry without a name`);
    if (!isNbdString(e.name)) throw new Error(`${layer}: export name longer than ${MAX_STRING} bytes or containing NUL`);
    if (e.description !== undefined && e.description !== null && (typeof e.description !== "string" || !isNbdString(e.description))) {
      throw new Error(`${layer}: export description longer than ${MAX_STRING} bytes or containing NUL`);
    }
    if (seen.has(e.name)) throw new Error(`${layer}: listExports returned '${e.name}' twice`);
    seen.add(e.name);
  }
  return list;
}

export { closeContext };

/** Errors already named for the layer they came from (a filter passing one up from below must not rename it). */
const attributed = new WeakSet<object>();

/**
 * The error of a lifecycle step, its message starting with the layer's
 * name as nbdkit's ("nbdkit: NAME: error: ..."), unless the layer already
 * named itself or the error came from a layer below.
 */
function attribute(name: string, err: unknown): Error {
  const e = err instanceof Error ? err : new Error(String(err));
  if (attributed.has(e)) return e;
  if (!e.message.startsWith(`${name}:`) && !e.message.startsWith(`${name}[`)) e.message = `${name}: ${e.message}`;
  attributed.add(e);
  return e;
}
