// Small helpers on xstate's inspection events: which machine an actor
// runs, its state as one string, and a plain, bounded copy of event and
// context payloads (sockets, buffers, actor refs and other live objects
// become short strings) for anything that serializes them.

import type { ActorRefLike, AnyEventObject, InspectionEvent, Snapshot } from "xstate";

/** What an actor ref carries at run time beyond ActorRefLike. */
interface ActorInternals {
  id?: string;
  sessionId: string;
  logic?: { id?: unknown; root?: unknown };
  _parent?: unknown;
}

/** The id of the machine an actor runs ("options", "sharedHandle", ...), or undefined for other logic. */
export function machineOf(ref: ActorRefLike): string | undefined {
  const logic = (ref as unknown as ActorInternals).logic;
  return logic && typeof logic.id === "string" && logic.root !== undefined ? logic.id : undefined;
}

export function sessionOf(ref: ActorRefLike): string {
  return (ref as unknown as ActorInternals).sessionId;
}

/** Whether the actor was created on its own (createActor) rather than spawned or invoked. */
export function isRootActor(ref: ActorRefLike): boolean {
  return (ref as unknown as ActorInternals)._parent === undefined;
}

/** A state value as one string: "SERVING", or "a.b" for nested states, "a.b|c.d" for parallel ones. */
export function stateName(value: unknown): string {
  if (typeof value === "string") return value;
  if (value && typeof value === "object") {
    return Object.entries(value as Record<string, unknown>)
      .map(([k, v]) => {
        const inner = stateName(v);
        return inner === "" ? k : `${k}.${inner}`;
      })
      .join("|");
  }
  return "";
}

/** The state of a machine snapshot, or undefined for logic without states. */
export function snapshotState(s: Snapshot<unknown> | { value?: unknown } | undefined): string | undefined {
  const v = (s as { value?: unknown } | undefined)?.value;
  return v === undefined ? undefined : stateName(v);
}

function isActorRefLike(v: object): v is ActorRefLike {
  const o = v as Record<string, unknown>;
  return typeof o.sessionId === "string" && typeof o.send === "function";
}

/** A JSON-safe copy of `v`: plain objects and arrays (bounded), live objects named, not walked. */
export function plain(v: unknown, depth = 4): unknown {
  if (v === null || v === undefined) return v;
  switch (typeof v) {
    case "string":
      return v.length > 256 ? v.slice(0, 256) + "…" : v;
    case "number":
    case "boolean":
      return v;
    case "bigint":
      return v.toString();
    case "function":
      return `[function ${v.name || "anonymous"}]`;
    case "symbol":
      return v.toString();
  }
  const o = v as object;
  if (ArrayBuffer.isView(o)) return `[${o.constructor.name} ${o.byteLength} bytes]`;
  if (o instanceof Error) return `[${o.name}: ${o.message}]`;
  if (isActorRefLike(o)) return `[actor ${(o as unknown as ActorInternals).id ?? o.sessionId}]`;
  if (depth <= 0) return "[…]";
  if (Array.isArray(o)) return o.slice(0, 32).map((x) => plain(x, depth - 1));
  const proto = Object.getPrototypeOf(o) as object | null;
  if (proto !== Object.prototype && proto !== null) return `[${(o.constructor as { name?: string } | undefined)?.name || "object"}]`;
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(o).slice(0, 32)) out[k] = plain((o as Record<string, unknown>)[k], depth - 1);
  return out;
}

export function plainEvent(e: AnyEventObject): AnyEventObject {
  return plain(e) as AnyEventObject;
}

export type InspectFn = (ev: InspectionEvent) => void;

/** One inspect function calling each of `fns` (undefined when there are none: no inspection at all). */
export function fanOut(fns: ReadonlyArray<InspectFn | undefined>): InspectFn | undefined {
  const list = fns.filter((f): f is InspectFn => f !== undefined);
  if (list.length === 0) return undefined;
  if (list.length === 1) return list[0];
  return (ev) => {
    for (const f of list) f(ev);
  };
}

/** The machine an actor runs and its current state, as far as known. */
export function phaseMachine(ref: ActorRefLike): { machine?: string; state?: string } {
  const machine = machineOf(ref);
  const state = snapshotState(ref.getSnapshot() as { value?: unknown });
  const out: { machine?: string; state?: string } = {};
  if (machine !== undefined) out.machine = machine;
  if (state !== undefined) out.state = state;
  return out;
}
