// Table-driven transition tests: every row is one (state, event, guard)
// candidate of a machine, checked with xstate's pure transition(); and the
// table must list exactly the candidates the machine has (via render.ts's
// walk of machine.root), so a new transition without a row fails.
import { expect, it } from "vitest";
import { transition, type AnyStateMachine } from "xstate";
import { children, edgesOf, eventName } from "../../src/machines/render.js";

export interface Row {
  from: string;
  /** Context overrides for the starting snapshot. */
  ctx?: Record<string, unknown>;
  event: { type: string; [k: string]: unknown };
  /** The guard label of the candidate this row exercises ("" = unguarded). */
  guard: string;
  to: string;
  /** Expected context fields after the transition. */
  expect?: Record<string, unknown>;
  /** Expected non-assign actions, as "name" or "name(reason)". */
  actions?: string[];
}

function fmt(a: { type: string; params?: unknown }): string {
  const p = a.params as Record<string, unknown> | undefined;
  return p && typeof p === "object" && "reason" in p ? `${a.type}(${String(p.reason)})` : a.type;
}

export function candidates(machine: AnyStateMachine): string[] {
  const out = new Set<string>();
  for (const s of children(machine.root)) {
    for (const e of edgesOf(s)) out.add(`${s.key} ${e.event} [${e.guard ?? ""}]`);
  }
  return [...out].sort();
}

export function transitionTable(machine: AnyStateMachine, base: Record<string, unknown>, rows: Row[]): void {
  it("the table covers every transition and guard of the machine", () => {
    const listed = [...new Set(rows.map((r) => `${r.from} ${eventName(r.event.type)} [${r.guard}]`))].sort();
    expect(listed).toEqual(candidates(machine));
  });
  for (const r of rows) {
    const name = `${r.from} + ${r.event.type}${r.guard ? ` [${r.guard}]` : ""} -> ${r.to}` +
      (r.ctx ? ` ${JSON.stringify(r.ctx)}` : "");
    it(name, () => {
      const start = machine.resolveState({ value: r.from, context: { ...base, ...r.ctx } });
      const [next, actions] = transition(machine, start, r.event as never);
      expect(next.value).toBe(r.to);
      if (r.expect) expect(next.context).toMatchObject(r.expect);
      // Starting and stopping invoked actors (xstate.spawnChild/stopChild) is the machine's own business.
      const names = (actions as { type: string; params?: unknown }[]).filter((a) => !a.type.startsWith("xstate.")).map(fmt);
      expect(names).toEqual(r.actions ?? []);
    });
  }
}
