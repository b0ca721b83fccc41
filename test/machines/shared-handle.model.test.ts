// Model-based tests: walk the shared-handle machine's graph (@xstate/graph)
// and drive the REAL SharedHandle runner along every path with fake
// open/close, checking its observable behaviour at each state.
import { describe, expect, it } from "vitest";
import type { SnapshotFrom } from "xstate";
import { sharedHandleMachine } from "../../src/machines/shared-handle.js";
import { flush, Harness } from "./helpers.js";
import { allTransitions, outcomes, replay, taken, walk, type WalkPath } from "./paths.js";

type Snap = SnapshotFrom<typeof sharedHandleMachine>;
const OPENED = "xstate.done.actor.openHandle";
const OPEN_FAILED = "xstate.error.actor.openHandle";
const CLOSED = "xstate.done.actor.drainAndClose";
const CLOSE_FAILED = "xstate.error.actor.drainAndClose";
const EVENTS = [...["AFTER_FORK", "ACQUIRE", "RELEASE", "UNLOAD"].map((type) => ({ type })), ...outcomes(["openHandle", "drainAndClose"])];
type Input = { closeOnLastRelease: boolean; maxRefs: number };

interface Walk {
  h: Harness;
  prev: Snap;
  granted: number;
  warnings: number;
}

/** Do `act` (a RELEASE or UNLOAD) with a tracked request in flight; close must wait for it. */
async function withRequestInFlight(w: Walk, act: () => void): Promise<void> {
  const { h } = w;
  const finish = h.request();
  const closesBefore = h.closes;
  act();
  await flush();
  expect(h.closes, "close must wait for the in-flight request").toBe(closesBefore);
  expect(h.sh.inFlight).toBe(1);
  await finish();
  expect(h.sh.inFlight).toBe(0);
  if (h.sh.state === "closing") {
    expect(h.closes).toBe(closesBefore + 1);
    const done = h.log.lastIndexOf("request-done");
    expect(done, "the request completes before close is called").toBe(h.log.length - 2);
  }
}

function events(w: Walk) {
  const { h } = w;
  const act = (fn: () => void) => async () => {
    if (h.sh.state === "open" && h.sh.refs > 0) await withRequestInFlight(w, fn);
    else {
      fn();
      await flush();
    }
  };
  return {
    AFTER_FORK: async () => h.sh.afterFork(),
    ACQUIRE: async () => {
      h.acquire();
      await flush();
    },
    RELEASE: act(() => h.sh.release()),
    UNLOAD: act(() => void h.unload()),
    [OPENED]: async () => void (await h.succeedOpen()),
    [OPEN_FAILED]: () => h.failOpen("disk on fire"),
    [CLOSED]: () => h.succeedClose(),
    [CLOSE_FAILED]: () => h.failClose("close boom"),
  };
}

function check(w: Walk, s: Snap, eventType?: string): void {
  const { h, prev } = w;
  const c = s.context;
  expect(h.sh.state).toBe(s.value);
  expect(h.sh.refs).toBe(c.refs);
  expect(h.sh.waiting).toBe(c.waiters);
  // Acquirers: the waiting ones are pending, every granted reference resolved.
  w.granted += Math.max(0, c.refs - prev.context.refs);
  expect(h.count("pending")).toBe(c.waiters);
  expect(h.count("resolved")).toBe(w.granted);
  expect(h.acquires.every((o) => o.status !== "resolved" || o.handedClosed === false)).toBe(true);
  if (eventType === "ACQUIRE" && c.refs === prev.context.refs && c.waiters === prev.context.waiters) {
    const why =
      prev.value === "dormant"
        ? /before afterFork/
        : prev.value === "closed" || prev.context.unloading
          ? /after unload/
          : /too many references/;
    expect(h.acquires.at(-1)?.error?.message).toMatch(why);
  }
  if (eventType === OPEN_FAILED && prev.context.waiters > 0) {
    const failed = h.acquires.filter((o) => o.error?.message.includes("open failed: disk on fire"));
    expect(failed.length).toBeGreaterThanOrEqual(prev.context.waiters);
  }
  // Bad releases are warned about, once each.
  if (eventType === "RELEASE" && c.refs === prev.context.refs) w.warnings++;
  expect(h.warnings.filter((m) => m.includes("release without")).length).toBe(w.warnings);
  // Open/close bookkeeping: at most one handle open, closed before the next opens.
  const openHandles = h.opens - h.openFails - h.closes;
  switch (s.value) {
    case "opening":
      expect(h.pendingOpen).not.toBeNull();
      expect(h.pendingClose).toBeNull();
      expect(openHandles).toBe(1); // the open in progress
      break;
    case "open":
      expect(h.pendingOpen).toBeNull();
      expect(openHandles).toBe(1);
      expect(h.lastHandle?.closed).toBe(false);
      break;
    case "closing":
      expect(h.pendingClose).not.toBeNull();
      expect(openHandles).toBe(0);
      break;
    default: // dormant, idle, closed: nothing open, nothing in progress
      expect(h.pendingOpen).toBeNull();
      expect(h.pendingClose).toBeNull();
      expect(openHandles).toBe(0);
  }
  // unload() resolves exactly when the machine is closed.
  for (const u of h.unloads) expect(u.status).toBe(s.value === "closed" ? "resolved" : "pending");
  if (c.unloading) expect(h.unloads.length).toBeGreaterThan(0);
  w.prev = s;
}

async function walkAll(paths: WalkPath[], input: Input) {
  for (const path of paths) {
    const h = new Harness(input);
    const initial = sharedHandleMachine.resolveState({
      value: "dormant",
      context: { refs: 0, waiters: 0, unloading: false, ...input },
    });
    const w: Walk = { h, prev: initial, granted: 0, warnings: 0 };
    check(w, initial);
    let last: string | undefined;
    const ev = events(w);
    await replay(
      path,
      {
        "xstate.init": () => {},
        ...Object.fromEntries(
          Object.entries(ev).map(([k, fn]) => [k, async () => {
            last = k;
            await fn();
          }]),
        ),
      },
      (_v, i) => {
        if (i > 0) check(w, path.steps[i]!.state as Snap, last);
      },
    );
  }
  return paths.length;
}

const inputs: Input[] = [
  { closeOnLastRelease: true, maxRefs: 2 },
  { closeOnLastRelease: false, maxRefs: 2 },
];

describe("shared handle: model-based, real runner", () => {
  for (const input of inputs) {
    it(`every shortest path (${JSON.stringify(input)})`, async () => {
      const n = await walkAll(walk(sharedHandleMachine, EVENTS, { input }).shortest, input);
      expect(n).toBeGreaterThan(10);
    });
  }

  for (const closeOnLastRelease of [true, false]) {
    it(`every simple path, maxRefs 1, closeOnLastRelease ${closeOnLastRelease}`, async () => {
      const input = { closeOnLastRelease, maxRefs: 1 };
      const paths = walk(sharedHandleMachine, EVENTS, { input }).simple;
      const n = await walkAll(paths, input);
      expect(n).toBeGreaterThan(20);
    }, 60_000);
  }

  it("the walks take every transition, the open and close failures included", () => {
    const all: WalkPath[] = [];
    for (const input of inputs) {
      const w = walk(sharedHandleMachine, EVENTS, { input });
      all.push(...w.shortest, ...w.simple);
    }
    for (const closeOnLastRelease of [true, false]) {
      all.push(...walk(sharedHandleMachine, EVENTS, { input: { closeOnLastRelease, maxRefs: 1 } }).simple);
    }
    const got = new Set(taken(all));
    expect(allTransitions(sharedHandleMachine, { changing: true }).filter((t) => !got.has(t))).toEqual([]);
  });

  it("every simple path between distinct states, maxRefs 2", async () => {
    for (const input of inputs) {
      // States keyed by value + context only (not by the incoming transition).
      await walkAll(walk(sharedHandleMachine, EVENTS, { input }).simple, input);
    }
  }, 60_000);
});
