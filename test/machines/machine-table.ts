// Transition tables for machines that invoke their effects, checked with
// xstate's pure transition(): each row starts the machine in a state (with
// its invoked children, as a running actor has them), delivers one event
// (an outside event, an invoked actor's outcome xstate.done.actor.ID /
// xstate.error.actor.ID, or a delay's xstate.after.NAME...), and checks
// everything the machine decided: the state, the context, the output of a
// final state, the named side effects in order, the actors it invokes (and
// their input), the delays it starts, the events it sends its children and
// the events it raises. Leaving a state must stop its invoked actors and
// cancel its delays; staying must touch neither. The table must list exactly
// the machine's (state, event, guard) candidates (table.ts's candidates(),
// from render.ts's walk), so a new transition without a row fails.
import { expect, it } from "vitest";
import {
  createActor, fromPromise, initialTransition, transition, type AnyMachineSnapshot, type AnyStateMachine, type EventObject,
} from "xstate";
import { eventName } from "../../src/machines/render.js";
import { candidates } from "./table.js";

export interface TRow {
  /** The state the row starts in. */
  from: string;
  /** Context overrides for the starting snapshot. */
  ctx?: Record<string, unknown>;
  /** Reach `from` from the initial state with these events (children as the machine made them), instead of restoring it. */
  via?: EventObject[];
  /** Machine input (for the initial state, or for `via`). */
  input?: unknown;
  /** The event; { type: "xstate.init" } starts the machine. */
  event: EventObject;
  /** Guard label of the candidate exercised ("" = unguarded). */
  guard?: string;
  /** The candidates ("STATE EVENT [guard]") the row exercises, when not `${from} ${event} [${guard}]`. */
  covers?: string[];
  /** A targetless transition that re-enters `from` (its effects restart). */
  reenter?: boolean;
  to: string;
  /** Context fields after the transition. */
  expect?: Record<string, unknown>;
  /** Named side effects in order: "name", or "name(NBD_REP_ERR_X)" when it has an error parameter. */
  effects?: string[];
  /** Actors invoked, in order. */
  invokes?: string[];
  /** Input of invoked actors, by actor. */
  inputs?: Record<string, unknown>;
  /** Delays started, by name. */
  timers?: string[];
  /** Events sent to children: "EVENT>child". */
  sends?: string[];
  /** Events raised (processed in the same macrostep). */
  raised?: string[];
  /** Expected output (checked when `to` is final; required then if the machine has an output). */
  output?: Record<string, unknown>;
}

export interface Decided {
  effects: string[];
  /** Invoked actors by source; invokeIds by id. */
  invokes: string[];
  invokeIds: string[];
  inputs: Record<string, unknown>;
  stops: string[];
  /** Delays started by name; timerIds by their event (xstate.after.NAME.MACHINE.STATE). */
  timers: string[];
  timerIds: string[];
  cancels: string[];
  sends: string[];
  raised: string[];
}

type Act = { type: string; params?: Record<string, unknown> };

const delayName = (id: unknown) => /^xstate\.after\.([^.]+)\./.exec(String(id))?.[1] ?? String(id);

/** A named side effect as text: the name, with the error parameter when there is one. */
export function fmtEffect(a: Act): string {
  const p = a.params;
  return p && typeof p === "object" && "error" in p ? `${a.type}(${String(p.error)})` : a.type;
}

/** What a list of actions from transition() decides, by kind. */
export function decided(actions: readonly unknown[]): Decided {
  const d: Decided = { effects: [], invokes: [], invokeIds: [], inputs: {}, stops: [], timers: [], timerIds: [], cancels: [], sends: [], raised: [] };
  for (const x of actions as Act[]) {
    const p = (x.params ?? {}) as Record<string, unknown>;
    switch (x.type) {
      case "xstate.spawnChild": {
        const src = typeof p.src === "string" ? p.src : String(p.id);
        d.invokes.push(src);
        d.invokeIds.push(String(p.id));
        d.inputs[src] = p.input;
        break;
      }
      case "xstate.stopChild":
        d.stops.push(String(p.id));
        break;
      case "xstate.raise":
        if (p.delay !== undefined) {
          d.timers.push(delayName(p.id));
          d.timerIds.push(String(p.id));
        } else d.raised.push((p.event as EventObject).type);
        break;
      case "xstate.cancel":
        d.cancels.push(String(p.sendId));
        break;
      case "xstate.sendTo":
        d.sends.push(`${(p.event as EventObject).type}>${(p.to as { id?: string }).id ?? String(p.to)}`);
        break;
      case "xstate.assign":
        break;
      default:
        if (x.type.startsWith("xstate.")) throw new Error(`unexpected built-in action ${x.type}`);
        d.effects.push(fmtEffect(x));
    }
  }
  return d;
}

const inert = fromPromise(() => new Promise<never>(() => {}));

/**
 * A restored snapshot of `machine` in `value`, with the children a running
 * actor has there (one unstarted stand-in per invoke of the active states),
 * so leaving the state stops them and sendTo finds them.
 */
export function restore(machine: AnyStateMachine, value: string, context: Record<string, unknown>): AnyMachineSnapshot {
  const s = machine.resolveState({ value, context } as never) as AnyMachineSnapshot & { _nodes: { invoke?: { id: string }[] }[] };
  const children: Record<string, unknown> = {};
  for (const n of s._nodes) for (const inv of n.invoke ?? []) children[inv.id] = createActor(inert, { id: inv.id });
  return { ...s, children } as AnyMachineSnapshot;
}

/** Start `machine` and deliver `events`, the way a running actor would take them. */
export function drive(machine: AnyStateMachine, input: unknown, events: readonly EventObject[]): { snapshot: AnyMachineSnapshot; decided: Decided[] } {
  const [first, acts] = initialTransition(machine, input as never);
  let snapshot = first as AnyMachineSnapshot;
  const out = [decided(acts)];
  for (const ev of events) {
    const [next, a] = transition(machine, snapshot as never, ev as never);
    snapshot = next as AnyMachineSnapshot;
    out.push(decided(a));
  }
  return { snapshot, decided: out };
}

export function rowKeys(r: TRow): string[] {
  return r.covers ?? [`${r.from} ${eventName(r.event.type)} [${r.guard ?? ""}]`];
}

function rowName(r: TRow): string {
  const key = (r.covers?.[0] ?? `${r.from} ${eventName(r.event.type)} [${r.guard ?? ""}]`).replace(/ \[\]$/, "");
  const ev = { ...r.event } as Record<string, unknown>;
  delete ev.type;
  const extra = Object.keys(ev).length ? ` ${JSON.stringify(ev, (_k, v) => (v instanceof Error ? `${v.name}: ${v.message}` : v))}` : "";
  return `${key} -> ${r.to}` + (r.ctx ? ` ${JSON.stringify(r.ctx)}` : "") + extra;
}

/** Run one row; returns what the machine decided. */
export function runRow(machine: AnyStateMachine, base: Record<string, unknown>, r: TRow): { next: AnyMachineSnapshot; d: Decided; start?: AnyMachineSnapshot } {
  if (r.event.type === "xstate.init") {
    const [next, acts] = initialTransition(machine, r.input as never);
    return { next: next as AnyMachineSnapshot, d: decided(acts) };
  }
  let start: AnyMachineSnapshot;
  if (r.via) {
    start = drive(machine, r.input, r.via).snapshot;
    if (r.ctx) start = { ...start, context: { ...start.context, ...r.ctx } } as AnyMachineSnapshot;
  } else start = restore(machine, r.from, { ...base, ...r.ctx });
  expect(start.value, "the row's starting state").toBe(r.from);
  const [next, acts] = transition(machine, start as never, r.event as never);
  return { next: next as AnyMachineSnapshot, d: decided(acts), start };
}

export function machineTable(machine: AnyStateMachine, base: Record<string, unknown>, rows: TRow[]): void {
  it("the table covers every transition and guard of the machine", () => {
    const listed = [...new Set(rows.flatMap(rowKeys))].sort();
    expect(listed).toEqual(candidates(machine));
  });
  for (const r of rows) {
    it(rowName(r), () => {
      const { next, d, start } = runRow(machine, base, r);
      expect(next.value).toBe(r.to);
      if (r.expect) expect(next.context).toMatchObject(r.expect);
      expect(d.effects, "side effects").toEqual(r.effects ?? []);
      expect(d.invokes, "invoked actors").toEqual(r.invokes ?? []);
      for (const [id, input] of Object.entries(r.inputs ?? {})) expect(d.inputs[id], `input of ${id}`).toEqual(input);
      expect(d.timers, "delays started").toEqual(r.timers ?? []);
      expect(d.sends, "events sent to children").toEqual(r.sends ?? []);
      expect(d.raised, "events raised").toEqual(r.raised ?? []);
      if (start) {
        const left = r.to !== r.from || r.reenter === true;
        // Everything a state started ends with it, and nothing else does:
        // the children and delays of a state left (including those started
        // in this very step, in a state passed through), none otherwise.
        const alive = new Set(Object.keys(next.children));
        const passed = d.invokeIds.filter((id) => !alive.has(id));
        expect(d.stops.sort(), "children stopped").toEqual([...(left ? Object.keys(start.children) : []), ...passed].sort());
        const own = ((machine.root.states[r.from] as { after?: { eventType: string }[] } | undefined)?.after ?? []).map((t) => t.eventType);
        const passedTimers = d.timerIds.filter((id) => !next._nodes.some((n: { id: string }) => id.endsWith(`.${n.id}`)));
        expect(d.cancels.sort(), "delays cancelled").toEqual([...(left ? [...new Set(own)] : []), ...passedTimers].sort());
      }
      const final = (machine.root.states[r.to] as { type?: string } | undefined)?.type === "final";
      expect(next.status).toBe(final ? "done" : "active");
      if (final && machine.config.output) expect(r.output, "rows into a final state give the output").toBeDefined();
      if (r.output) expect(next.output).toMatchObject(r.output);
    });
  }
}
