// The status page's state model: what the page shows, collected from
// xstate's inspection events (the server actor, live context actors), the
// running server's connections() and the layer stack (each layer's
// lifecycle state, each shared handle's state and references).
//
// Inspection events only register actors and say "something changed";
// states are read from the actors and the stack when a view is built, so
// an event costs a couple of comparisons. Rates come from a Sampler that
// reads the connections' counters once a second (src/status/sampler.ts).

import type { AnyActorRef, InspectionEvent } from "xstate";
import type { ConnectionStatus } from "../actors/connection-settings.js";
import type { RunningServer } from "../actors/server.js";
import type { Stack } from "../backend/stack.js";
import { machines } from "../machines/index.js";
import { machineOf, sessionOf, snapshotState } from "./actors.js";
import { displayAddress } from "./address.js";
import { Sampler, type Activity, type Totals } from "./sampler.js";

/** Diagram file stem (diagrams/ID.svg) of each machine id: "sharedHandle" -> "shared-handle". */
export const DIAGRAM_OF: Readonly<Record<string, string>> = Object.fromEntries(machines.map((m) => [m.machine.id, m.id]));

export interface MachineView {
  /** Diagram id (file stem in diagrams/). */
  diagram: string;
  /** Current state (a node title in the diagram), or null when unknown. */
  state: string | null;
}

export interface ConnectionView extends MachineView {
  /** conn-N, as in -v log lines. */
  id: string;
  remote: string;
  /** The export negotiated ("" is the default export), null before one is chosen. */
  exportName: string | null;
  phase: string;
  inFlight: number;
  bytesRead: number;
  bytesWritten: number;
  /** Requests answered and requests answered with an error; null when the server does not count them. */
  requests: number | null;
  errors: number | null;
  /** Bytes per second over the last sample interval (about a second). */
  readRate: number;
  writeRate: number;
  /** Requests per second over the last sample interval, null when requests are not counted. */
  requestRate: number | null;
  /** Seconds since the connection was accepted (or first seen). */
  age: number;
}

export interface LayerView extends MachineView {
  name: string;
  kind: string;
  /** This layer's live contexts (one per open export per connection, or shared), counted by state. */
  contexts: Record<string, number>;
}

export interface StatusView {
  /** nbdstate's version. */
  version: string;
  /** Seconds since the server started listening. */
  uptime: number;
  server: MachineView & {
    /** The server's NBD URI as nbdstate builds it (encoded). */
    address: string;
    /** The same as people write it: nbd+unix:///?socket=/tmp/s.sock. */
    display: string;
    connections: number;
  };
  /** Outermost first; the plugin is last. */
  layers: LayerView[];
  shared: (MachineView & { key: string; refs: number })[];
  connections: ConnectionView[];
  /** Since the server started, closed connections included. */
  totals: Totals;
  /** Server-wide activity per second, the last minute, oldest first. */
  activity: Activity;
}

/** The machine and state a connection is in: its phase's machine, or guessed from the phase name. */
function connectionMachine(c: ConnectionStatus): MachineView {
  if (c.machine !== undefined && DIAGRAM_OF[c.machine] !== undefined) {
    return { diagram: DIAGRAM_OF[c.machine]!, state: c.state ?? null };
  }
  if (c.phase === "handshake" || c.phase === "options") return { diagram: c.phase, state: null };
  return { diagram: "transmission", state: c.phase };
}

export interface StatusModelOptions {
  version?: string;
  /** Clock, for tests. */
  now?: () => number;
  /** Sample period, ms (default 1000). */
  sampleMs?: number;
}

export class StatusModel {
  private serverActor: AnyActorRef | undefined;
  private contexts = new Map<string, AnyActorRef>();
  private server: RunningServer | undefined;
  private stack: Stack | undefined;
  private listener: (() => void) | undefined;
  private startedAt: number;
  private readonly now: () => number;
  private readonly version: string;
  readonly sampler: Sampler;

  constructor(opts: StatusModelOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.version = opts.version ?? "";
    this.startedAt = this.now();
    this.sampler = new Sampler(() => this.server?.connections() ?? [], { now: this.now, periodMs: opts.sampleMs ?? 1000 });
  }

  /** The inspect function to pass to the stack and the server. */
  readonly inspect = (ev: InspectionEvent): void => {
    if (ev.type === "@xstate.actor") {
      const m = machineOf(ev.actorRef);
      if (m === "server") this.serverActor = ev.actorRef as AnyActorRef;
      else if (m === "context") this.contexts.set(sessionOf(ev.actorRef), ev.actorRef as AnyActorRef);
    } else if (ev.type === "@xstate.snapshot") {
      if (ev.snapshot.status !== "active") this.contexts.delete(sessionOf(ev.actorRef));
    } else return;
    this.listener?.();
  };

  /** Called (often: throttle it) after inspection events that may change the view. */
  onChange(fn: (() => void) | undefined): void {
    this.listener = fn;
  }

  /** The server listens: start the clock and the once-a-second sampling. */
  attach(stack: Stack, server: RunningServer): void {
    this.stack = stack;
    this.server = server;
    this.startedAt = this.now();
    this.sampler.start();
  }

  detach(): void {
    this.sampler.stop();
  }

  /** Live contexts per layer name, by state. */
  private contextCounts(): Map<string, Record<string, number>> {
    const byLayer = new Map<string, Record<string, number>>();
    for (const [id, a] of this.contexts) {
      const s = a.getSnapshot() as { status: string; value?: unknown; context?: { layer?: unknown } };
      if (s.status !== "active") {
        this.contexts.delete(id);
        continue;
      }
      const layer = typeof s.context?.layer === "string" ? s.context.layer : "?";
      const st = snapshotState(s) ?? "?";
      const counts = byLayer.get(layer) ?? {};
      counts[st] = (counts[st] ?? 0) + 1;
      byLayer.set(layer, counts);
    }
    return byLayer;
  }

  /** The server machine counts every connection it accepted (nextId); the sampler may miss a short one. */
  private totals(conns: ConnectionStatus[]): Totals {
    const t = this.sampler.totals(conns);
    const ctx = (this.serverActor?.getSnapshot() as { context?: { nextId?: unknown } } | undefined)?.context;
    if (typeof ctx?.nextId === "number") t.connections = Math.max(t.connections, ctx.nextId - 1);
    return t;
  }

  view(): StatusView {
    const conns = this.server?.connections() ?? [];
    const now = this.now();
    const rates = this.sampler.rates(conns, now);
    const server = this.serverActor;
    const contexts = this.contextCounts();
    const address = this.server?.address.uri ?? "";
    return {
      version: this.version,
      uptime: Math.max(0, Math.floor((now - this.startedAt) / 1000)),
      server: {
        diagram: "server",
        state: server ? (snapshotState(server.getSnapshot()) ?? null) : null,
        address,
        display: displayAddress(address),
        connections: conns.length,
      },
      layers: (this.stack?.layers ?? []).map((l) => ({
        diagram: "backend-lifecycle",
        state: l.state,
        name: l.name,
        kind: l.kind,
        contexts: contexts.get(l.name) ?? {},
      })),
      shared: (this.stack?.shared.describe() ?? []).map((h) => ({ diagram: "shared-handle", state: h.state, key: h.key, refs: h.refs })),
      connections: conns.map((c) => {
        const r = rates.get(c.id)!;
        return {
          ...connectionMachine(c),
          id: c.id,
          remote: c.remote,
          exportName: c.exportName ?? null,
          phase: c.phase,
          inFlight: c.inFlight,
          bytesRead: c.bytesRead,
          bytesWritten: c.bytesWritten,
          requests: r.requests,
          errors: r.errors,
          readRate: r.readRate,
          writeRate: r.writeRate,
          requestRate: r.requestRate,
          age: r.age,
        };
      }),
      totals: this.totals(conns),
      activity: this.sampler.activity(),
    };
  }
}
