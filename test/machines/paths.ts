// Graph walks of machines that invoke their effects. @xstate/graph's
// createTestModel refuses machines with invoke; its getShortestPaths and
// getSimplePaths do not, given the outcome events of the invoked actors
// (xstate.done.actor.ID / xstate.error.actor.ID) to try. replay() runs one
// path against the system under test: a handler per event type, then a
// check of the state the path reaches.
import { getPathsFromEvents, getShortestPaths, getSimplePaths } from "@xstate/graph";
import type { AnyStateMachine, EventObject } from "xstate";

export interface WalkStep {
  event: EventObject;
  state: { value: unknown; context: unknown };
}
export interface WalkPath {
  description: string;
  steps: WalkStep[];
}

/** The outcome events of invoked actors with these ids, for the walk. */
export function outcomes(ids: string[]): EventObject[] {
  return ids.flatMap((id) => [{ type: `xstate.done.actor.${id}` }, { type: `xstate.error.actor.${id}`, error: new Error(`${id} failed`) }]);
}

function describe(steps: WalkStep[]): string {
  const last = steps.at(-1)!;
  return `reaches ${JSON.stringify(last.state.value)} via ${steps.map((s) => s.event.type.replace(/^xstate\.(done|error)\.actor\./, "$1:")).join(" → ")}`;
}

/** Shortest and simple paths over the given events (plain and outcome events). */
export function walk(machine: AnyStateMachine, events: EventObject[], o: Record<string, unknown> = {}): { shortest: WalkPath[]; simple: WalkPath[] } {
  const opts = { events, ...o } as never;
  const conv = (p: { steps: WalkStep[] }) => ({ description: describe(p.steps), steps: p.steps });
  return {
    shortest: getShortestPaths(machine, opts).map(conv),
    simple: getSimplePaths(machine, opts).map(conv),
  };
}

/** The path that a given event sequence takes (for loops simple paths never close). */
export function pathOf(machine: AnyStateMachine, events: EventObject[]): WalkPath {
  const [p] = getPathsFromEvents(machine, events as never) as unknown as { steps: WalkStep[] }[];
  return { description: describe(p!.steps), steps: p!.steps };
}

/** Run a path: the handler of each step's event, then check(state value, step index). */
export async function replay(
  path: WalkPath,
  handlers: Record<string, (ev: EventObject, i: number) => Promise<void> | void>,
  check: (value: string, i: number) => void,
): Promise<void> {
  for (const [i, step] of path.steps.entries()) {
    const h = handlers[step.event.type];
    if (!h) throw new Error(`no handler for ${step.event.type}`);
    await h(step.event, i);
    check(typeof step.state.value === "string" ? step.state.value : JSON.stringify(step.state.value), i);
  }
}

/**
 * Every (state, event) transition the machine has, for coverage checks;
 * with changing, only those that can lead to another state (self-loops such
 * as refusals leave no trace in a path of states: table tests cover them).
 */
export function allTransitions(machine: AnyStateMachine, o: { changing?: boolean } = {}): string[] {
  return Object.values(machine.root.states)
    .flatMap((st) =>
      [...st.transitions.entries()]
        .filter(([, ts]) => !o.changing || ts.some((t: { target?: readonly { key: string }[] }) => t.target?.some((x) => x.key !== st.key)))
        .map(([e]) => `${st.key} ${e}`),
    )
    .sort();
}

/** The (state, event) transitions a set of paths takes. */
export function taken(paths: WalkPath[]): string[] {
  const out = new Set<string>();
  for (const p of paths) {
    p.steps.slice(1).forEach((s, i) => {
      const from = p.steps[i]!.state.value;
      out.add(`${typeof from === "string" ? from : JSON.stringify(from)} ${s.event.type}`);
    });
  }
  return [...out].sort();
}
