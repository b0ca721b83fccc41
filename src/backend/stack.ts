// The layer stack: the plugin at the bottom, filters on top (the first
// --filter given is the outermost), with nbdkit's callback order:
//   load inner->outer; config and configComplete outer->inner;
//   getReady and afterFork inner->outer; cleanup then unload outer->inner.
// Per connection (src/backend/opened.ts): open outer->inner, prepare
// inner->outer, finalize and close outer->inner.

import type { InspectionEvent } from "xstate";
import { Layer } from "./layer.js";
import { finalizeAndClose, openPrepared, type Opened } from "./opened.js";
import { SharedContexts } from "./shared-contexts.js";
import type { ConnectionInfo, Context, ExportEntry, Filter, ListParams, PeerInfo, Plugin, ServerServices } from "./types.js";

export interface StackOptions {
  /** Debug lines (shown with -v). */
  log?: (msg: string) => void;
  /** Lines always shown (errors; ServerServices.log). Default: stderr. */
  error?: (msg: string) => void;
  inspect?: (ev: InspectionEvent) => void;
}

export class Stack {
  /** Outermost first; the plugin is last. */
  readonly layers: Layer[];
  readonly shared = new SharedContexts();
  readonly inspect?: (ev: InspectionEvent) => void;
  private logger: (msg: string) => void;
  private errorLogger: (msg: string) => void;
  private shutdownHandler: ((reason: string) => void) | null = null;
  private pendingShutdown: string | null = null;
  /** What layers get at afterFork: shutdown, log, debug. */
  readonly services: ServerServices = {
    shutdown: (reason = "a plugin or filter asked the server to shut down") => {
      if (this.shutdownHandler) this.shutdownHandler(reason);
      else this.pendingShutdown ??= reason;
    },
    log: (m) => this.errorLogger(m),
    debug: (m) => this.logger(m),
  };

  constructor(
    readonly plugin: Plugin,
    readonly filters: Filter[] = [],
    opts: StackOptions = {},
  ) {
    this.logger = opts.log ?? (() => {});
    this.errorLogger = opts.error ?? ((m) => void process.stderr.write(`nbdstate: ${m}\n`));
    this.inspect = opts.inspect;
    let below = new Layer(this, "plugin", plugin, null);
    const layers = [below];
    for (const f of [...filters].reverse()) {
      below = new Layer(this, "filter", f, below);
      layers.unshift(below);
    }
    this.layers = layers;
  }

  get top(): Layer {
    return this.layers[0]!;
  }

  log(msg: string): void {
    this.logger(msg);
  }

  /**
   * Who carries out ServerServices.shutdown (the CLI's graceful shutdown).
   * A request made before this is set (e.g. in afterFork) is held and
   * handed over now.
   */
  onShutdownRequest(fn: (reason: string) => void): void {
    this.shutdownHandler = fn;
    const pending = this.pendingShutdown;
    this.pendingShutdown = null;
    if (pending !== null) fn(pending);
  }

  private innerToOuter(): Layer[] {
    return [...this.layers].reverse();
  }

  async load(): Promise<void> {
    for (const l of this.innerToOuter()) if (l.impl.load) await l.impl.load();
  }

  /** Offered to the outermost filter first; each filter passes on what it does not own. */
  config(key: string, value: string): Promise<void> {
    return this.configAt(0, key, value);
  }

  private async configAt(i: number, key: string, value: string): Promise<void> {
    const layer = this.layers[i]!;
    if (layer.kind === "filter") {
      const f = layer.impl as Filter;
      const next = (k: string, v: string) => this.configAt(i + 1, k, v);
      if (f.config) await f.config(next, key, value);
      else await next(key, value);
      return;
    }
    const p = layer.impl as Plugin;
    if (!p.config) throw new Error(`${p.name}: this plugin does not take parameters (got '${key}')`);
    await p.config(key, value);
  }

  configComplete(): Promise<void> {
    return this.configCompleteAt(0);
  }

  private async configCompleteAt(i: number): Promise<void> {
    const layer = this.layers[i]!;
    const next = () => this.configCompleteAt(i + 1);
    try {
      if (layer.kind === "filter") {
        const f = layer.impl as Filter;
        if (f.configComplete) await f.configComplete(next);
        else await next();
      } else {
        const p = layer.impl as Plugin;
        if (p.configComplete) await p.configComplete();
      }
    } catch (err) {
      layer.lifecycle.send({ type: "FAILED", error: String(err) });
      throw err;
    }
    layer.lifecycle.send({ type: "CONFIG_COMPLETE" });
  }

  async getReady(): Promise<void> {
    for (const l of this.innerToOuter()) {
      try {
        if (l.impl.getReady) await l.impl.getReady();
      } catch (err) {
        l.lifecycle.send({ type: "FAILED", error: String(err) });
        throw err;
      }
      l.lifecycle.send({ type: "GET_READY" });
    }
  }

  async afterFork(): Promise<void> {
    for (const l of this.innerToOuter()) {
      // A layer is running (open to filter-owned contexts) before the layer
      // above's afterFork, so that filter may read it there.
      l.lifecycle.send({ type: "AFTER_FORK" });
      try {
        if (l.kind === "filter") {
          const f = l.impl as Filter;
          if (f.afterFork) await f.afterFork(l.below!.asLower(), this.services);
        } else {
          const p = l.impl as Plugin;
          if (p.afterFork) await p.afterFork(this.services);
        }
      } catch (err) {
        l.lifecycle.send({ type: "FAILED", error: String(err) });
        throw err;
      }
    }
  }

  /**
   * As nbdkit: cleanup of every layer, then unload of every layer, each
   * pass outer->inner. After a filter's cleanup, whatever it still holds
   * open in the layer below (exclusive or shared) is drained and closed, so
   * no layer is cleaned up while a context into it is open.
   */
  async unload(): Promise<void> {
    for (const l of this.layers) {
      l.lifecycle.send({ type: "UNLOAD" });
      try {
        if (l.impl.cleanup) await l.impl.cleanup();
      } catch (err) {
        this.log(`${l.name}: cleanup: ${String(err)}`);
      }
      if (l.below) {
        await l.below.closeLeftovers();
        await this.shared.unload(l.below);
      }
    }
    for (const l of this.layers) {
      try {
        if (l.impl.unload) await l.impl.unload();
      } catch (err) {
        this.log(`${l.name}: unload: ${String(err)}`);
      }
      l.lifecycle.send({ type: "UNLOADED" });
    }
  }

  /** Before the handshake, outer->inner: any layer may refuse the client by throwing. */
  preconnect(readonly: boolean, peer: PeerInfo): Promise<void> {
    return this.preconnectAt(0, readonly, peer);
  }

  private async preconnectAt(i: number, readonly: boolean, peer: PeerInfo): Promise<void> {
    const layer = this.layers[i]!;
    if (layer.kind === "filter") {
      const f = layer.impl as Filter;
      const next = (ro: boolean) => this.preconnectAt(i + 1, ro, peer);
      if (f.preconnect) await f.preconnect(next, readonly, peer);
      else await next(readonly);
    } else {
      const p = layer.impl as Plugin;
      if (p.preconnect) await p.preconnect(readonly, peer);
    }
  }

  listExports(p: ListParams): Promise<ExportEntry[]> {
    return this.top.listExports(p);
  }

  defaultExport(p: ListParams): Promise<string | null> {
    return this.top.defaultExport(p);
  }

  /** Open and prepare a context through the whole stack for one client. */
  open(readonly: boolean, exportName: string, tls: boolean, connection?: ConnectionInfo): Promise<Opened> {
    return openPrepared(this.top, readonly, exportName, tls, connection);
  }

  /** Finalize (unless the connection failed) and close a client's context. */
  close(opened: Opened, finalize = true): Promise<void> {
    return finalizeAndClose(opened, finalize);
  }
}

export type { Context, Opened };
