// Transition tables run through a real actor: createActor on the pure
// machine with every named side-effect action replaced by a spy, started
// from a restored snapshot; each row sends one event and checks the state,
// the context, the output of a final state, and which named actions ran.
// The table must list exactly the machine's (state, event, guard)
// candidates (table.ts's candidates(), from render.ts's walk).
import { expect, it } from "vitest";
import { createActor, type AnyStateMachine } from "xstate";
import { eventName } from "../../src/machines/render.js";
import { candidates } from "./table.js";

export interface ActorRow {
  from: string;
  ctx?: Record<string, unknown>;
  event: { type: string; [k: string]: unknown };
  /** Guard label of the candidate exercised ("" = unguarded). */
  guard: string;
  to: string;
  expect?: Record<string, unknown>;
  /** Named side effects that ran, in order, e.g. "replyError(NBD_REP_ERR_INVALID)". */
  actions?: string[];
  /** Expected output (checked when `to` is final). */
  output?: Record<string, unknown>;
}

/** A spied action as text: the name, with the error / set / reason param when there is one. */
export function fmtSpy(name: string, params: unknown): string {
  const p = params as Record<string, unknown> | undefined;
  if (p && typeof p === "object") {
    if ("error" in p) return `${name}(${String(p.error)})`;
    if ("set" in p) return `${name}(${p.set ? "set" : "list"})`;
    if ("reason" in p) return `${name}(${String(p.reason)})`;
  }
  return name;
}

/** Names of the machine's side-effect actions (assign/enqueue built-ins are left alone). */
export function sideEffects(machine: AnyStateMachine): string[] {
  const acts = (machine.implementations.actions ?? {}) as Record<string, unknown>;
  return Object.entries(acts)
    .filter(([, a]) => !(typeof a === "function" && String((a as { type?: unknown }).type ?? "").startsWith("xstate.")))
    .map(([n]) => n);
}

/** The machine with every side effect replaced by a spy that logs into `log`. */
export function spied<M extends AnyStateMachine>(machine: M, log: string[], extra: Record<string, unknown[]> = {}): M {
  const actions: Record<string, (a: unknown, p: unknown) => void> = {};
  for (const n of sideEffects(machine)) {
    actions[n] = (args, params) => {
      log.push(fmtSpy(n, params));
      (extra[n] ??= []).push({ args, params });
    };
  }
  return machine.provide({ actions } as never) as M;
}

/** Start a spied actor in `from` with the given context (entry actions of `from` do not run). */
export function actorAt<M extends AnyStateMachine>(machine: M, from: string, context: Record<string, unknown> | undefined, log: string[]) {
  const m = spied(machine, log);
  const snapshot = m.resolveState({ value: from, context } as never);
  const actor = createActor(m, { snapshot } as never);
  actor.subscribe({ error: () => {} });
  actor.start();
  return actor;
}

export function actorTable(machine: AnyStateMachine, base: Record<string, unknown> | undefined, rows: ActorRow[]): void {
  it("the table covers every transition and guard of the machine", () => {
    const listed = [...new Set(rows.map((r) => `${r.from} ${eventName(r.event.type)} [${r.guard}]`))].sort();
    expect(listed).toEqual(candidates(machine));
  });
  for (const r of rows) {
    const name = `${r.from} + ${r.event.type}${r.guard ? ` [${r.guard}]` : ""} -> ${r.to}` +
      (r.ctx ? ` ${JSON.stringify(r.ctx)}` : "") + (Object.keys(r.event).length > 1 ? ` ${JSON.stringify(r.event)}` : "");
    it(name, () => {
      const log: string[] = [];
      let actor;
      if (r.event.type === "always") {
        // An eventless transition: taken as the actor starts in `from` (the initial state).
        expect(machine.root.initial?.target?.[0]?.key).toBe(r.from);
        actor = createActor(spied(machine, log));
        actor.start();
      } else {
        actor = actorAt(machine, r.from, base && { ...base, ...r.ctx }, log);
        actor.send(r.event as never);
      }
      const s = actor.getSnapshot();
      expect(s.value).toBe(r.to);
      if (r.expect) expect(s.context).toMatchObject(r.expect);
      expect(log).toEqual(r.actions ?? []);
      const final = (machine.root.states[r.to] as { type?: string } | undefined)?.type === "final";
      expect(s.status).toBe(final ? "done" : "active");
      if (final && machine.config.output) expect(r.output, "rows into a final state give the output").toBeDefined();
      if (r.output) expect(s.output).toMatchObject(r.output);
    });
  }
}
