// The layer stack: the plugin at the bottom, filters on top (the first
// --filter given is the outermost). Each layer's own machine runs its
// steps; the stack only says which layer goes next, in nbdkit's order:
//   load inner->outer; config and configComplete outer->inner (a filter
//   passes on what it does not own); getReady and afterFork inner->outer;
//   cleanup of every layer, then unload of every layer, each outer->inner.
// Per connection (src/backend/chain.ts): open outer->inner, prepare
// inner->outer, finalize and close outer->inner.

import type { InspectionEvent } from "xstate";
import { finalizeAndClose, openPrepared, type Opened } from "./chain.js";
import { Layer, type LayerEnv } from "./layer.js";
import { filterOps } from "./filter-ops.js";
import { pluginOps } from "./layer-ops.js";
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
    const env: LayerEnv = { log: (m) => this.logger(m), inspect: opts.inspect, services: this.services, shared: this.shared };
    let below = new Layer(pluginOps(plugin), null, env);
    const layers = [below];
    for (const f of [...filters].reverse()) {
      below = new Layer(filterOps(f), below, env);
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

  /** A line always shown (on stderr, or as --log says). */
  error(msg: string): void {
    this.errorLogger(msg);
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
    for (const l of this.innerToOuter()) await l.load();
  }

  /** Offered to the outermost layer; each filter passes on what it does not own. */
  config(key: string, value: string): Promise<void> {
    return this.top.config(key, value);
  }

  configComplete(): Promise<void> {
    return this.top.configComplete();
  }

  async getReady(): Promise<void> {
    for (const l of this.innerToOuter()) await l.getReady();
  }

  async afterFork(): Promise<void> {
    for (const l of this.innerToOuter()) await l.afterFork();
  }

  /**
   * As nbdkit: cleanup of every layer, then unload of every layer, each
   * pass outer->inner. After a filter's cleanup, whatever it still holds
   * open in the layer below (exclusive or shared) is drained and closed, so
   * no layer is cleaned up while a context into it is open.
   */
  async unload(): Promise<void> {
    for (const l of this.layers) await l.cleanup();
    for (const l of this.layers) await l.unload();
  }

  /** Before the handshake, outer->inner: any layer may refuse the client by throwing. */
  preconnect(readonly: boolean, peer: PeerInfo): Promise<void> {
    return this.top.preconnect(readonly, peer);
  }

  listExports(p: ListParams): Promise<ExportEntry[]> {
    return this.top.listExports(p);
  }

  defaultExport(p: ListParams): Promise<string | null> {
    return this.top.defaultExport(p);
  }

  /** Every metadata context the stack serves for an export: base:allocation first. */
  async metaContexts(exportName: string): Promise<string[]> {
    return ["base:allocation", ...(await this.top.metaContexts(exportName))];
  }

  /** Open and prepare a context through the whole stack for one client. */
  open(readonly: boolean, exportName: string, tls: boolean, connection?: ConnectionInfo): Promise<Opened> {
    return openPrepared(this.top, { readonly, exportName, tls, connection });
  }

  /** Finalize (unless the connection failed) and close a client's context. */
  close(opened: Opened, finalize = true): Promise<void> {
    return finalizeAndClose(opened, finalize);
  }
}

export type { Context, Opened };
