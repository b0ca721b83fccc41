// One layer of the stack (a plugin or a filter) with its lifecycle actor,
// its listing defaults and the view filters above it get (LowerBackend).

import { createActor, type Actor } from "xstate";
import { backendLifecycleMachine } from "../machines/backend-lifecycle.js";
import { MAX_STRING } from "../protocol/constants.js";
import { isNbdString } from "../protocol/strings.js";
import { finalizeAndClose, openPrepared, type Opened } from "./opened.js";
import type { Stack } from "./stack.js";
import type { Context, ExportEntry, Filter, ListParams, LowerBackend, OpenOptions, Plugin } from "./types.js";

/** At most this many exports in one listing (a listing must not exhaust memory). */
export const MAX_EXPORTS = 10000;

export class Layer {
  readonly lifecycle: Actor<typeof backendLifecycleMachine>;
  /** Contexts filters above opened for themselves (exclusive). */
  private owned = new Map<Context, Opened>();
  private lowerView: LowerBackend | null = null;

  constructor(
    readonly stack: Stack,
    readonly kind: "plugin" | "filter",
    readonly impl: Plugin | Filter,
    readonly below: Layer | null,
  ) {
    this.lifecycle = createActor(backendLifecycleMachine, { inspect: stack.inspect, input: { layer: impl.name } });
    this.lifecycle.subscribe({ error: (err) => stack.log(`${impl.name}: lifecycle error: ${String(err)}`) });
    this.lifecycle.start();
  }

  get name(): string {
    return this.impl.name;
  }

  get state(): string {
    return String(this.lifecycle.getSnapshot().value);
  }

  /** True from afterFork until unload: when filters may open contexts into this layer. */
  get running(): boolean {
    return this.state === "running";
  }

  async listExports(p: ListParams): Promise<ExportEntry[]> {
    let list: ExportEntry[];
    if (this.kind === "filter") {
      const f = this.impl as Filter;
      list = f.listExports ? await f.listExports(this.below!.asLower(), p) : await this.below!.listExports(p);
    } else {
      const pl = this.impl as Plugin;
      if (pl.listExports) list = await pl.listExports(p);
      else {
        // nbdkit: a plugin without list_exports lists its default export,
        // or nothing when it has none.
        const def = await this.defaultExport(p);
        list = def === null ? [] : [{ name: def }];
      }
    }
    return checkList(this.name, list);
  }

  async defaultExport(p: ListParams): Promise<string | null> {
    let name: string | null;
    if (this.kind === "filter") {
      const f = this.impl as Filter;
      name = f.defaultExport ? await f.defaultExport(this.below!.asLower(), p) : await this.below!.defaultExport(p);
    } else {
      const pl = this.impl as Plugin;
      name = pl.defaultExport ? await pl.defaultExport(p) : "";
    }
    // As nbdkit: a default name that is not a valid NBD string (over 4096
    // bytes, or with NUL) is ignored, i.e. there is no default export.
    if (typeof name !== "string" || !isNbdString(name)) return null;
    return name;
  }

  /** The view of this layer that the filter above it gets. */
  asLower(): LowerBackend {
    if (this.lowerView) return this.lowerView;
    const layer = this;
    this.lowerView = {
      name: this.name,
      listExports: (p) => layer.listExports(p),
      defaultExport: (p) => layer.defaultExport(p),
      open: (o) => layer.openOwned(o),
      close: (c) => layer.closeOwned(c),
    };
    return this.lowerView;
  }

  private async openOwned(o: OpenOptions): Promise<Context> {
    if (!this.running) {
      throw new Error(`${this.name}: a filter may open its own context only from afterFork until unload (layer is ${this.state})`);
    }
    if (o.shared) return this.stack.shared.acquire(this, o);
    const opened = await openPrepared(this, o.readonly ?? false, o.exportName ?? "", o.tls ?? false);
    this.owned.set(opened.ctx, opened);
    return opened.ctx;
  }

  private async closeOwned(ctx: Context): Promise<void> {
    if (this.stack.shared.owns(ctx)) return this.stack.shared.release(ctx);
    const opened = this.owned.get(ctx);
    if (!opened) throw new Error(`${this.name}: close of a context this layer did not open (or closed twice)`);
    this.owned.delete(ctx);
    await finalizeAndClose(opened);
  }

  /** Close what filters above left open, before this layer unloads. */
  async closeLeftovers(): Promise<void> {
    for (const ctx of [...this.owned.keys()]) await this.closeOwned(ctx).catch((e) => this.stack.log(String(e)));
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
