// The status page's state model: what the page shows, collected from
// xstate's inspection events (the server actor, live context actors), the
// running server's connections() and the layer stack (each layer's
// lifecycle state, each shared handle's state and references).
//
// Inspection events only register actors and say "something changed";
// states are read from the actors and the stack when a view is built, so
// an event costs a couple of comparisons.

import type { AnyActorRef, InspectionEvent } from "xstate";
import type { ConnectionStatus } from "../actors/connection.js";
import type { RunningServer } from "../actors/server.js";
import type { Stack } from "../backend/stack.js";
import { machines } from "../machines/index.js";
import { machineOf, sessionOf, snapshotState } from "./actors.js";

/** Diagram file stem (diagrams/ID.svg) of each machine id: "sharedHandle" -> "shared-handle". */
export const DIAGRAM_OF: Readonly<Record<string, string>> = Object.fromEntries(machines.map((m) => [m.machine.id, m.id]));

export interface MachineView {
  /** Diagram id (file stem in diagrams/). */
  diagram: string;
  /** Current state (a node title in the diagram), or null when unknown. */
  state: string | null;
}

export interface ConnectionView extends MachineView {
  id: string;
  remote: string;
  exportName: string | null;
  phase: string;
  inFlight: number;
  bytesRead: number;
  bytesWritten: number;
}

export interface StatusView {
  server: MachineView & { address: string; connections: number };
  layers: (MachineView & { name: string; kind: string })[];
  shared: (MachineView & { key: string; refs: number })[];
  /** Live per-connection contexts (one per layer per open export), counted by state. */
  contexts: MachineView & { counts: Record<string, number> };
  connections: ConnectionView[];
}

/** The machine and state a connection is in: its phase's machine, or guessed from the phase name. */
function connectionMachine(c: ConnectionStatus): MachineView {
  if (c.machine !== undefined && DIAGRAM_OF[c.machine] !== undefined) {
    return { diagram: DIAGRAM_OF[c.machine]!, state: c.state ?? null };
  }
  if (c.phase === "handshake" || c.phase === "options") return { diagram: c.phase, state: null };
  return { diagram: "transmission", state: c.phase };
}

export class StatusModel {
  private serverActor: AnyActorRef | undefined;
  private contexts = new Map<string, AnyActorRef>();
  private server: RunningServer | undefined;
  private stack: Stack | undefined;
  private listener: (() => void) | undefined;

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

  attach(stack: Stack, server: RunningServer): void {
    this.stack = stack;
    this.server = server;
  }

  view(): StatusView {
    const conns = this.server?.connections() ?? [];
    const server = this.serverActor;
    const counts: Record<string, number> = {};
    for (const [id, a] of this.contexts) {
      const s = a.getSnapshot() as { status: string; value?: unknown };
      if (s.status !== "active") {
        this.contexts.delete(id);
        continue;
      }
      const st = snapshotState(s) ?? "?";
      counts[st] = (counts[st] ?? 0) + 1;
    }
    const busiest = Object.entries(counts).sort((a, b) => b[1] - a[1])[0]?.[0] ?? null;
    return {
      server: {
        diagram: "server",
        state: server ? (snapshotState(server.getSnapshot()) ?? null) : null,
        address: this.server?.address.uri ?? "",
        connections: conns.length,
      },
      layers: (this.stack?.layers ?? []).map((l) => ({ diagram: "backend-lifecycle", state: l.state, name: l.name, kind: l.kind })),
      shared: (this.stack?.shared.describe() ?? []).map((h) => ({ diagram: "shared-handle", state: h.state, key: h.key, refs: h.refs })),
      contexts: { diagram: "context", state: busiest, counts },
      connections: conns.map((c) => ({
        ...connectionMachine(c),
        id: c.id,
        remote: c.remote,
        exportName: c.exportName ?? null,
        phase: c.phase,
        inFlight: c.inFlight,
        bytesRead: c.bytesRead,
        bytesWritten: c.bytesWritten,
      })),
    };
  }
}
