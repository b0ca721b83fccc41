// contextMachine: every transition and guard, and model-based walks of
// every shortest and simple path with the callbacks provided as a runner
// would (machine.provide), checking nbdkit's call order at each state.
import { createTestModel } from "@xstate/graph";
import { describe, expect, it } from "vitest";
import { createActor, type SnapshotFrom } from "xstate";
import { contextMachine as m } from "../../src/machines/context.js";
import { transitionTable, type Row } from "./table.js";

type Snap = SnapshotFrom<typeof m>;
const E = (type: string, error?: string) => (error ? { type, error } : { type });

const rows: Row[] = [
  { from: "opening", event: E("OPENED"), guard: "", to: "preparing", actions: ["callPrepare"] },
  { from: "opening", event: E("OPEN_FAILED", "no such export"), guard: "", to: "failed", expect: { error: "no such export" } },
  { from: "preparing", event: E("PREPARED"), guard: "", to: "open" },
  { from: "preparing", event: E("PREPARE_FAILED", "bad"), guard: "", to: "closing", expect: { error: "bad" }, actions: ["callClose"] },
  { from: "open", event: E("FINALIZE"), guard: "", to: "finalizing", actions: ["callFinalize"] },
  { from: "open", event: E("CLOSE"), guard: "", to: "closing", actions: ["callClose"] },
  { from: "finalizing", event: E("FINALIZED"), guard: "", to: "closing", actions: ["callClose"] },
  { from: "finalizing", event: E("FINALIZE_FAILED"), guard: "", to: "closing", expect: { error: "finalize_failed" }, actions: ["callClose"] },
  { from: "closing", event: E("CLOSED"), guard: "", to: "closed" },
  { from: "closing", event: E("CLOSE_FAILED", "EIO"), guard: "", to: "closed", expect: { error: "EIO" } },
  { from: "closing", ctx: { error: "first" }, event: E("CLOSE_FAILED", "second"), guard: "", to: "closed", expect: { error: "first" } },
];

/** What a runner would call on entering each state. */
const CALL: Record<string, string> = { opening: "open", preparing: "prepare", finalizing: "finalize", closing: "close" };

function runner() {
  const calls: string[] = [];
  const actor = createActor(
    m.provide({
      actions: {
        callOpen: () => void calls.push("open"),
        callPrepare: () => void calls.push("prepare"),
        callFinalize: () => void calls.push("finalize"),
        callClose: () => void calls.push("close"),
      },
    }),
  );
  const errors: unknown[] = [];
  actor.subscribe({ error: (e) => errors.push(e) });
  actor.start();
  return { actor, calls, errors };
}

async function walk(paths: ReturnType<ReturnType<typeof createTestModel>["getShortestPaths"]>) {
  for (const path of paths) {
    const r = runner();
    const seen: string[] = [];
    const expectedCalls: string[] = []; // the first step is xstate.init (entering opening)
    const send = (type: string) => async () => {
      seen.push(type);
      r.actor.send(E(type, type.endsWith("_FAILED") ? `${type} error` : undefined) as never);
    };
    await path.test({
      events: Object.fromEntries(
        ["OPENED", "OPEN_FAILED", "PREPARED", "PREPARE_FAILED", "FINALIZE", "FINALIZED", "FINALIZE_FAILED", "CLOSE", "CLOSED", "CLOSE_FAILED"].map(
          (t) => [t, send(t)],
        ),
      ),
      states: {
        "*": (s) => {
          const snap = s as Snap;
          const value = String(snap.value);
          expect(r.actor.getSnapshot().value).toBe(value);
          if (CALL[value]) expectedCalls.push(CALL[value]!);
          expect(r.calls).toEqual(expectedCalls);
          // nbdkit's rules: nothing is closed that was not opened, finalize
          // only on request, close at most once and last.
          if (!seen.includes("OPENED")) expect(r.calls).not.toContain("close");
          if (!seen.includes("FINALIZE")) expect(r.calls).not.toContain("finalize");
          expect(r.calls.filter((c) => c === "close").length).toBeLessThanOrEqual(1);
          const firstFailure = seen.find((t) => t.endsWith("_FAILED"));
          expect(r.actor.getSnapshot().context.error).toBe(firstFailure ? `${firstFailure} error` : undefined);
          if (value === "closed" || value === "failed") {
            expect(r.actor.getSnapshot().status).toBe("done");
            expect(r.actor.getSnapshot().output).toEqual({ error: r.actor.getSnapshot().context.error });
            if (value === "closed") expect(r.calls.at(-1)).toBe("close");
          }
          expect(r.errors).toEqual([]);
        },
      },
    });
  }
  return paths.length;
}

describe("contextMachine", () => {
  transitionTable(m, {}, rows);

  it("starts in opening and calls open", () => {
    const r = runner();
    expect(r.actor.getSnapshot().value).toBe("opening");
    expect(r.calls).toEqual(["open"]);
  });

  it("closed and failed are final", () => {
    expect(m.root.states.closed!.type).toBe("final");
    expect(m.root.states.failed!.type).toBe("final");
  });

  it("model: every shortest path", async () => {
    expect(await walk(createTestModel(m).getShortestPaths())).toBeGreaterThan(3);
  });

  it("model: every simple path", async () => {
    const paths = createTestModel(m).getSimplePaths();
    expect(await walk(paths)).toBeGreaterThan(3);
    // Between them the simple paths take every transition of the machine.
    const taken = new Set<string>();
    for (const p of paths) {
      p.steps.forEach((s, i) => {
        if (i > 0) taken.add(`${String(p.steps[i - 1]!.state.value)} ${s.event.type}`);
      });
    }
    const expected = Object.values(m.root.states).flatMap((st) => [...st.transitions.keys()].map((e) => `${st.key} ${e}`));
    expect([...taken].sort()).toEqual(expected.sort());
  });
});
