// --inspect=stderr: one line per machine transition, for logs:
//
//   nbdstate: inspect: 2026-12-03T17:40:01.123Z options conn-1/options: AWAIT_OPTION --xstate.done.actor.readOption--> OPEN_EXPORT_GO
//
// The time is UTC to the millisecond; the connection id is the one -v lines
// and the status page use.
//
// Built on xstate's inspection events: a @xstate.snapshot event carries the
// event just processed and the resulting snapshot; the previous state is
// kept per actor (a WeakMap: finished actors are forgotten with them).
// A @xstate.microstep with transitions marks a taken transition, so a
// self-transition is logged while an event that matched nothing is not.

import type { ActorRefLike, InspectionEvent } from "xstate";
import { machineOf, snapshotState, type InspectFn } from "./actors.js";

interface Seen {
  state: string | undefined;
  took: boolean;
}

/**
 * The actor as the log names it: machine, actor id, and the layer it
 * belongs to when known. A connection's phases are invoked under the same
 * ids in every connection: they are named by their connection too
 * ("options conn-3/options").
 */
function label(ref: ActorRefLike, machine: string, context: unknown): string {
  const r = ref as unknown as { id?: string; _parent?: ActorRefLike & { id?: string } };
  let id = r.id ?? ref.sessionId;
  if (r._parent && machineOf(r._parent) === "connection") id = `${r._parent.id ?? r._parent.sessionId}/${id}`;
  const c = context as { layer?: unknown } | undefined;
  return typeof c?.layer === "string" ? `${machine} ${id} (${c.layer})` : `${machine} ${id}`;
}

export function transitionLogger(write: (line: string) => void): InspectFn {
  const seen = new WeakMap<ActorRefLike, Seen>();
  return (ev: InspectionEvent) => {
    if (ev.type === "@xstate.microstep") {
      if (ev._transitions.length === 0) return;
      const s = seen.get(ev.actorRef);
      if (s) s.took = true;
      else seen.set(ev.actorRef, { state: undefined, took: true });
      return;
    }
    if (ev.type !== "@xstate.snapshot") return;
    const machine = machineOf(ev.actorRef);
    const to = snapshotState(ev.snapshot);
    if (machine === undefined || to === undefined) return;
    const prev = seen.get(ev.actorRef);
    if (prev && prev.state !== undefined && prev.state === to && !prev.took) return;
    seen.set(ev.actorRef, { state: to, took: false });
    const status = ev.snapshot.status === "active" ? "" : ` (${ev.snapshot.status})`;
    const ctx = (ev.snapshot as { context?: unknown }).context;
    write(`${new Date().toISOString()} ${label(ev.actorRef, machine, ctx)}: ${prev?.state ?? "(start)"} --${ev.event.type}--> ${to}${status}`);
  };
}
