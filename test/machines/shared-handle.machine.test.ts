// Every transition and guard of sharedHandleMachine (pure, no runner).
import { describe, expect, it } from "vitest";
import { initialTransition, transition } from "xstate";
import { DEFAULT_MAX_REFS, sharedHandleMachine as m } from "../../src/machines/shared-handle.js";
import { transitionTable, type Row } from "./table.js";

const base = { refs: 0, waiters: 0, closeOnLastRelease: false, unloading: false, maxRefs: 3 };
const E = (type: string) => ({ type });
const U = { unloading: true };
const OK_OPEN = { type: "xstate.done.actor.openHandle" };
const FAIL_OPEN = { type: "xstate.error.actor.openHandle", error: new Error("x") };
const OK_CLOSE = { type: "xstate.done.actor.drainAndClose" };
const FAIL_CLOSE = { type: "xstate.error.actor.drainAndClose", error: new Error("x") };

const rows: Row[] = [
  // dormant
  { from: "dormant", event: E("AFTER_FORK"), guard: "", to: "idle" },
  { from: "dormant", event: E("ACQUIRE"), guard: "", to: "dormant", actions: ["rejectAcquire(before afterFork)"] },
  { from: "dormant", event: E("RELEASE"), guard: "", to: "dormant", actions: ["warnBadRelease"] },
  { from: "dormant", event: E("UNLOAD"), guard: "", to: "closed", expect: U },
  // idle
  { from: "idle", event: E("ACQUIRE"), guard: "", to: "opening", expect: { waiters: 1 }, actions: ["queueAcquire"] },
  { from: "idle", ctx: { refs: 1 }, event: E("RELEASE"), guard: "hasRefs", to: "idle", expect: { refs: 0 } },
  { from: "idle", event: E("RELEASE"), guard: "", to: "idle", actions: ["warnBadRelease"] },
  { from: "idle", event: E("UNLOAD"), guard: "", to: "closed", expect: U },
  // opening
  { from: "opening", ctx: { waiters: 1, ...U }, event: E("ACQUIRE"), guard: "isUnloading", to: "opening", expect: { waiters: 1 }, actions: ["rejectAcquire(after unload)"] },
  { from: "opening", ctx: { waiters: 1 }, event: E("ACQUIRE"), guard: "hasRoom", to: "opening", expect: { waiters: 2 }, actions: ["queueAcquire"] },
  { from: "opening", ctx: { waiters: 3 }, event: E("ACQUIRE"), guard: "", to: "opening", expect: { waiters: 3 }, actions: ["rejectAcquire(too many references)"] },
  { from: "opening", ctx: { waiters: 2, ...U }, event: OK_OPEN, guard: "isUnloading", to: "closing", expect: { waiters: 0, refs: 0 }, actions: ["rejectWaiters(unloaded while opening)"] },
  { from: "opening", ctx: { waiters: 2 }, event: OK_OPEN, guard: "", to: "open", expect: { waiters: 0, refs: 2 }, actions: ["resolveWaiters"] },
  { from: "opening", ctx: { waiters: 2, ...U }, event: FAIL_OPEN, guard: "isUnloading", to: "closed", expect: { waiters: 0 }, actions: ["rejectWaiters(open failed)"] },
  { from: "opening", ctx: { waiters: 2 }, event: FAIL_OPEN, guard: "", to: "idle", expect: { waiters: 0, refs: 0 }, actions: ["rejectWaiters(open failed)"] },
  { from: "opening", ctx: { waiters: 1, refs: 1 }, event: E("RELEASE"), guard: "hasRefs", to: "opening", expect: { refs: 0 } },
  { from: "opening", ctx: { waiters: 1 }, event: E("RELEASE"), guard: "", to: "opening", actions: ["warnBadRelease"] },
  { from: "opening", ctx: { waiters: 1 }, event: E("UNLOAD"), guard: "", to: "opening", expect: { ...U, waiters: 1 } },
  // open
  { from: "open", ctx: { refs: 3 }, event: E("ACQUIRE"), guard: "not(hasRoom)", to: "open", expect: { refs: 3 }, actions: ["rejectAcquire(too many references)"] },
  { from: "open", ctx: { refs: 1 }, event: E("ACQUIRE"), guard: "", to: "open", expect: { refs: 2 }, actions: ["resolveAcquire"] },
  { from: "open", ctx: { refs: 1, closeOnLastRelease: true }, event: E("RELEASE"), guard: "and(isLastRef, closeOnLastRelease)", to: "closing", expect: { refs: 0 } },
  { from: "open", ctx: { refs: 1 }, event: E("RELEASE"), guard: "hasRefs", to: "open", expect: { refs: 0 } },
  { from: "open", ctx: { refs: 2, closeOnLastRelease: true }, event: E("RELEASE"), guard: "hasRefs", to: "open", expect: { refs: 1 } },
  { from: "open", event: E("RELEASE"), guard: "", to: "open", expect: { refs: 0 }, actions: ["warnBadRelease"] },
  { from: "open", ctx: { refs: 2 }, event: E("UNLOAD"), guard: "", to: "closing", expect: { ...U, refs: 2 } },
  // closing
  { from: "closing", ctx: U, event: E("ACQUIRE"), guard: "isUnloading", to: "closing", expect: { waiters: 0 }, actions: ["rejectAcquire(after unload)"] },
  { from: "closing", event: E("ACQUIRE"), guard: "hasRoom", to: "closing", expect: { waiters: 1 }, actions: ["queueAcquire"] },
  { from: "closing", ctx: { waiters: 3 }, event: E("ACQUIRE"), guard: "", to: "closing", expect: { waiters: 3 }, actions: ["rejectAcquire(too many references)"] },
  { from: "closing", ctx: { ...U, refs: 2 }, event: E("RELEASE"), guard: "hasRefs", to: "closing", expect: { refs: 1 } },
  { from: "closing", event: E("RELEASE"), guard: "", to: "closing", actions: ["warnBadRelease"] },
  { from: "closing", ctx: { waiters: 2 }, event: E("UNLOAD"), guard: "", to: "closing", expect: { ...U, waiters: 0 }, actions: ["rejectWaiters(unloading)"] },
  { from: "closing", ctx: { ...U, refs: 1 }, event: OK_CLOSE, guard: "isUnloading", to: "closed", expect: { refs: 1 } },
  { from: "closing", ctx: { waiters: 2 }, event: OK_CLOSE, guard: "hasWaiters", to: "opening", expect: { waiters: 2 } },
  { from: "closing", event: OK_CLOSE, guard: "", to: "idle" },
  { from: "closing", ctx: U, event: FAIL_CLOSE, guard: "isUnloading", to: "closed", actions: ["reportCloseError"] },
  { from: "closing", ctx: { waiters: 1 }, event: FAIL_CLOSE, guard: "hasWaiters", to: "opening", actions: ["reportCloseError"] },
  { from: "closing", event: FAIL_CLOSE, guard: "", to: "idle", actions: ["reportCloseError"] },
  // closed
  { from: "closed", ctx: U, event: E("ACQUIRE"), guard: "", to: "closed", actions: ["rejectAcquire(after unload)"] },
  { from: "closed", ctx: { ...U, refs: 1 }, event: E("RELEASE"), guard: "hasRefs", to: "closed", expect: { refs: 0 } },
  { from: "closed", ctx: U, event: E("RELEASE"), guard: "", to: "closed", actions: ["warnBadRelease"] },
];

describe("sharedHandleMachine transitions", () => {
  transitionTable(m, base, rows);

  it("starts dormant with input applied, maxRefs defaulting large and at least 1", () => {
    const [s] = initialTransition(m, { closeOnLastRelease: true });
    expect(s.value).toBe("dormant");
    expect(s.context).toEqual({ refs: 0, waiters: 0, closeOnLastRelease: true, unloading: false, maxRefs: DEFAULT_MAX_REFS });
    expect(initialTransition(m, { maxRefs: 0 })[0].context.maxRefs).toBe(1);
    expect(initialTransition(m, {})[0].context.closeOnLastRelease).toBe(false);
  });

  it("ignores events a state does not name (e.g. an open outcome in idle, AFTER_FORK twice)", () => {
    for (const [from, type] of [["idle", OK_OPEN.type], ["idle", "AFTER_FORK"], ["open", OK_CLOSE.type], ["closed", "UNLOAD"]]) {
      const s = m.resolveState({ value: from!, context: base });
      const [next, actions] = transition(m, s, { type } as never);
      expect(next.value).toBe(from);
      expect(next.context).toEqual(base);
      expect(actions).toEqual([]);
    }
  });

  it("closed is terminal: no transition leaves it", () => {
    expect(m.root.states.closed!.type).not.toBe("final");
    for (const [, ts] of m.root.states.closed!.transitions) for (const t of ts) expect(t.target).toBeUndefined();
  });
});
