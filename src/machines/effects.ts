// Declared effects: what a machine names and its runner must provide.
//
// A machine declares each side effect (an action or an invoked actor) with
// a stub from here; the actor that runs the machine supplies the real one
// with machine.provide(). unprovided() lists what is still a stub, so a
// test (and a runner, at start) can refuse a machine whose effects nobody
// provides: the stubs are never meant to run.

import { fromPromise, type AnyStateMachine } from "xstate";

const STUB = Symbol.for("nbdstate.effect.stub");

type Stubbed = { [STUB]?: string };

/** A declared action: the runner provides it. Running the stub throws. */
export function declaredAction<P = undefined>(name: string): (_: unknown, params: P) => void {
  const f = (() => {
    throw new Error(`action ${name} was declared but not provided`);
  }) as ((_: unknown, params: P) => void) & Stubbed;
  f[STUB] = name;
  return f;
}

/** A declared invoked actor (a promise): the runner provides it. The stub rejects. */
export function declaredActor<I = unknown, O = void>(name: string) {
  const a = fromPromise<O, I>(() => Promise.reject(new Error(`actor ${name} was declared but not provided`)));
  (a as unknown as Stubbed)[STUB] = name;
  return a;
}

/**
 * Names of the actions and actors of `machine` that are still declared
 * stubs, those of the machines it invokes included ("actor NAME: action X").
 */
export function unprovided(machine: AnyStateMachine): string[] {
  const out: string[] = [];
  const impl = machine.implementations as { actions?: Record<string, unknown>; actors?: Record<string, unknown> };
  for (const [kind, table] of [["action", impl.actions], ["actor", impl.actors]] as const) {
    for (const [name, v] of Object.entries(table ?? {})) {
      if (v && (v as Stubbed)[STUB] !== undefined) out.push(`${kind} ${name}`);
      else if (kind === "actor" && isMachine(v)) out.push(...unprovided(v).map((x) => `actor ${name}: ${x}`));
    }
  }
  return out.sort();
}

function isMachine(v: unknown): v is AnyStateMachine {
  return typeof v === "object" && v !== null && "implementations" in v && "root" in v;
}

/**
 * Where an effect of a machine provided once (not per run) finds what its
 * run works on: a root actor and every machine it invokes share one actor
 * system, and XState passes it to every action and actor (`args.system`).
 */
export type Of<T> = (args: { system: object }) => T;

/** What each root actor's run works on, by its actor system (held no longer than the system). */
export class SystemScopes<T> {
  private readonly bySystem = new WeakMap<object, T>();
  constructor(private readonly what: string) {}

  set(system: object, value: T): void {
    this.bySystem.set(system, value);
  }

  /** The run's value; an effect run outside a registered system is a bug, said plainly. */
  readonly of: Of<T> = ({ system }) => {
    const v = this.bySystem.get(system);
    if (v === undefined) throw new Error(`no ${this.what} is registered for this actor system`);
    return v;
  };
}

/** Throw unless every declared effect of `machine` is provided (runners call this once). */
export function assertProvided<M extends AnyStateMachine>(machine: M): M {
  const missing = unprovided(machine);
  if (missing.length > 0) throw new Error(`machine ${machine.id}: not provided: ${missing.join(", ")}`);
  return machine;
}
