// backendLifecycleMachine: every transition. The paths through the real
// runner (src/backend/layer.ts) are walked in
// test/backend/lifecycle-model.test.ts.
import { describe, expect, it } from "vitest";
import { backendLifecycleMachine as m } from "../../src/machines/backend-lifecycle.js";
import { unprovided } from "../../src/machines/effects.js";
import { transitionTable, type Row } from "./table.js";

const E = (type: string, extra: Record<string, unknown> = {}) => ({ type, ...extra });
const done = (id: string) => ({ type: `xstate.done.actor.${id}` });
const err = (id: string, msg = "EIO") => ({ type: `xstate.error.actor.${id}`, error: new Error(msg) });

const rows: Row[] = [
  { from: "created", event: E("LOAD"), guard: "", to: "loading" },
  { from: "created", event: E("UNLOAD"), guard: "", to: "unloaded" },
  { from: "loading", event: done("load"), guard: "", to: "loaded" },
  { from: "loading", event: err("load"), guard: "", to: "failed", expect: { error: "load: EIO" } },
  { from: "loaded", event: E("CONFIG", { key: "size", value: "1M" }), guard: "", to: "configuring" },
  { from: "loaded", event: E("CONFIG_COMPLETE"), guard: "", to: "completing" },
  { from: "loaded", event: E("UNLOAD"), guard: "", to: "unloading" },
  { from: "configuring", event: done("config"), guard: "", to: "loaded" },
  { from: "configuring", event: err("config", "memory: unknown parameter 'foo'"), guard: "", to: "failed", expect: { error: "config: memory: unknown parameter 'foo'" } },
  { from: "completing", event: done("configComplete"), guard: "", to: "configured" },
  { from: "completing", event: err("configComplete", "size= is required"), guard: "", to: "failed", expect: { error: "config_complete: size= is required" } },
  { from: "configured", event: E("GET_READY"), guard: "", to: "gettingReady" },
  { from: "configured", event: E("UNLOAD"), guard: "", to: "unloading" },
  { from: "gettingReady", event: done("getReady"), guard: "", to: "ready" },
  { from: "gettingReady", event: err("getReady"), guard: "", to: "failed", expect: { error: "get_ready: EIO" } },
  { from: "ready", event: E("AFTER_FORK"), guard: "", to: "forking" },
  { from: "ready", event: E("UNLOAD"), guard: "", to: "unloading" },
  { from: "forking", event: done("afterFork"), guard: "", to: "running" },
  { from: "forking", event: err("afterFork", "no upstream"), guard: "", to: "failed", expect: { error: "after_fork: no upstream" } },
  { from: "running", event: E("CLEANUP"), guard: "", to: "cleaningUp" },
  { from: "cleaningUp", event: done("cleanup"), guard: "", to: "cleanedUp" },
  { from: "cleaningUp", event: err("cleanup"), guard: "", to: "cleanedUp", expect: { error: "cleanup: EIO" } },
  { from: "cleanedUp", event: E("UNLOAD"), guard: "", to: "unloading" },
  { from: "failed", event: E("UNLOAD"), guard: "", to: "unloading" },
  { from: "unloading", event: done("unload"), guard: "", to: "unloaded" },
  { from: "unloading", event: err("unload"), guard: "", to: "unloaded", expect: { error: "unload: EIO" } },
  { from: "unloading", ctx: { error: "get_ready: first" }, event: err("unload"), guard: "", to: "unloaded", expect: { error: "get_ready: first" } },
];

describe("backendLifecycleMachine", () => {
  transitionTable(m, { layer: "memory" }, rows);

  it("every step is a declared effect the runner must provide", () => {
    expect(unprovided(m)).toEqual(
      ["afterFork", "cleanup", "config", "configComplete", "getReady", "load", "unload"].map((a) => `actor ${a}`),
    );
  });
});
