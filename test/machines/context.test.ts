// contextMachine: every transition, with the first error kept. The paths
// through the real runner are walked in test/backend/context-model.test.ts.
import { describe, expect, it } from "vitest";
import { contextMachine as m } from "../../src/machines/context.js";
import { unprovided } from "../../src/machines/effects.js";
import { transitionTable, type Row } from "./table.js";

const E = (type: string) => ({ type });
const done = (id: string) => ({ type: `xstate.done.actor.${id}` });
const err = (id: string, msg = `${id} broke`) => ({ type: `xstate.error.actor.${id}`, error: new Error(msg) });

const rows: Row[] = [
  { from: "opening", event: done("open"), guard: "", to: "opened" },
  { from: "opening", event: err("open", "no such export"), guard: "", to: "failed", expect: { error: "open: no such export" } },
  { from: "opened", event: E("PREPARE"), guard: "", to: "preparing" },
  { from: "opened", event: E("CLOSE"), guard: "", to: "closing" },
  { from: "preparing", event: done("prepare"), guard: "", to: "open" },
  { from: "preparing", event: err("prepare", "bad"), guard: "", to: "unprepared", expect: { error: "prepare: bad" } },
  { from: "unprepared", event: E("CLOSE"), guard: "", to: "closing" },
  { from: "open", event: E("FINALIZE"), guard: "", to: "finalizing" },
  { from: "open", event: E("CLOSE"), guard: "", to: "closing" },
  { from: "finalizing", event: done("finalize"), guard: "", to: "finalized" },
  { from: "finalizing", event: err("finalize"), guard: "", to: "finalized", expect: { error: "finalize: finalize broke" } },
  { from: "finalized", event: E("CLOSE"), guard: "", to: "closing" },
  { from: "closing", event: done("close"), guard: "", to: "closed" },
  { from: "closing", event: err("close", "EIO"), guard: "", to: "closed", expect: { error: "close: EIO" } },
  { from: "closing", ctx: { error: "first" }, event: err("close", "second"), guard: "", to: "closed", expect: { error: "first" } },
];

describe("contextMachine", () => {
  transitionTable(m, { layer: "memory" }, rows);

  it("closed and failed are final; the steps are declared effects for the runner to provide", () => {
    expect(m.root.states.closed!.type).toBe("final");
    expect(m.root.states.failed!.type).toBe("final");
    expect(unprovided(m)).toEqual(["actor close", "actor finalize", "actor open", "actor prepare"]);
  });
});
