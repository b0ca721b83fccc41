// backendLifecycleMachine: every transition and guard, plus model walks
// with runCleanupAndUnload provided as a runner would.
import { createTestModel } from "@xstate/graph";
import { describe, expect, it } from "vitest";
import { createActor } from "xstate";
import { backendLifecycleMachine as m } from "../../src/machines/backend-lifecycle.js";
import { transitionTable, type Row } from "./table.js";

const E = (type: string, error?: string) => (error ? { type, error } : { type });
const base = { layer: "memory" };

const rows: Row[] = [
  { from: "loaded", event: E("CONFIG_COMPLETE"), guard: "", to: "configured" },
  { from: "loaded", event: E("FAILED", "size= is required"), guard: "", to: "failed", expect: { error: "size= is required" } },
  { from: "loaded", event: E("UNLOAD"), guard: "", to: "unloading", actions: ["runCleanupAndUnload"] },
  { from: "configured", event: E("GET_READY"), guard: "", to: "ready" },
  { from: "configured", event: E("FAILED"), guard: "", to: "failed", expect: { error: "failed" } },
  { from: "configured", event: E("UNLOAD"), guard: "", to: "unloading", actions: ["runCleanupAndUnload"] },
  { from: "ready", event: E("AFTER_FORK"), guard: "", to: "running" },
  { from: "ready", event: E("FAILED", "after_fork: EIO"), guard: "", to: "failed", expect: { error: "after_fork: EIO" } },
  { from: "ready", event: E("UNLOAD"), guard: "", to: "unloading", actions: ["runCleanupAndUnload"] },
  { from: "running", event: E("UNLOAD"), guard: "", to: "unloading", actions: ["runCleanupAndUnload"] },
  { from: "unloading", event: E("UNLOADED", "cleanup threw"), guard: "eventHasError", to: "unloaded", expect: { error: "cleanup threw" } },
  { from: "unloading", event: E("UNLOADED"), guard: "", to: "unloaded" },
];

describe("backendLifecycleMachine", () => {
  transitionTable(m, base, rows);

  it("starts loaded with the layer name from input", () => {
    const a = createActor(m, { input: { layer: "file" } }).start();
    expect(a.getSnapshot().value).toBe("loaded");
    expect(a.getSnapshot().context).toEqual({ layer: "file" });
  });

  it("runs cleanup and unload exactly once, on entering unloading, from every live state", async () => {
    const paths = createTestModel(m, { input: base } as never).getSimplePaths();
    let unloads = 0;
    for (const path of paths) {
      const calls: string[] = [];
      const a = createActor(m.provide({ actions: { runCleanupAndUnload: () => void calls.push("cleanup+unload") } }), {
        input: base,
      });
      a.subscribe({ error: () => {} });
      a.start();
      const send = (t: string) => async () => void a.send(E(t) as never);
      await path.test({
        events: Object.fromEntries(
          ["CONFIG_COMPLETE", "GET_READY", "AFTER_FORK", "UNLOAD", "UNLOADED", "FAILED"].map((t) => [t, send(t)]),
        ),
        states: {
          "*": (s) => {
            expect(a.getSnapshot().value).toBe(s.value);
            const after = s.value === "unloading" || s.value === "unloaded";
            expect(calls).toEqual(after ? ["cleanup+unload"] : []);
            if (s.value === "failed" || s.value === "unloaded") expect(a.getSnapshot().status).toBe("done");
          },
        },
      });
      if (calls.length) unloads++;
    }
    // Paths through unloading from loaded, configured, ready and running.
    expect(unloads).toBe(4);
  });

  it("every shortest path reaches each state", () => {
    const reached = new Set(createTestModel(m, { input: base } as never).getShortestPaths({ allowDuplicatePaths: true }).map((p) => String(p.state.value)));
    expect([...reached].sort()).toEqual(Object.keys(m.root.states).sort());
  });
});
