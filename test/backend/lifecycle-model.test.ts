// Model-based test of the REAL layer lifecycle (src/backend/layer.ts, the
// runner of backendLifecycleMachine): every shortest and simple path of the
// machine, outcome events of its invoked steps included, is replayed
// against a Stack whose plugin callbacks are held at a gate and then return
// or throw as the path says. After every step the layer's machine is in the
// path's state, each callback ran exactly when the machine invoked it, and
// a failure leaves its error on the layer (and, for load .. after_fork,
// rejects the call, as the CLI needs to stop with it).
import { describe, expect, it } from "vitest";
import { Stack } from "../../src/backend/stack.js";
import type { Plugin } from "../../src/backend/types.js";
import { backendLifecycleMachine as m } from "../../src/machines/backend-lifecycle.js";
import { unprovided } from "../../src/machines/effects.js";
import { deferred, flush, type Deferred } from "../machines/helpers.js";
import { allTransitions, outcomes, pathOf, replay, taken, walk, type WalkPath } from "../machines/paths.js";

const STEP_OF: Record<string, string> = {
  load: "load", config: "config", configComplete: "configComplete", getReady: "getReady",
  afterFork: "afterFork", cleanup: "cleanup", unload: "unload",
};
const IDS = Object.keys(STEP_OF);
const EXTERNAL = ["LOAD", "CONFIG", "CONFIG_COMPLETE", "GET_READY", "AFTER_FORK", "CLEANUP", "UNLOAD"];
const walked = walk(m, [...EXTERNAL.map((t) => (t === "CONFIG" ? { type: t, key: "k", value: "v" } : { type: t })), ...outcomes(IDS)]);
const ev = (type: string) => (type === "CONFIG" ? { type, key: "k", value: "v" } : { type });
const ok = (id: string) => ({ type: `xstate.done.actor.${id}` });
// Config loops back to loaded, which no simple path does: one path takes two keys, then runs to unloaded.
const loop = pathOf(m, [
  ev("LOAD"), ok("load"), ev("CONFIG"), ok("config"), ev("CONFIG"), ok("config"), ev("CONFIG_COMPLETE"), ok("configComplete"),
  ev("GET_READY"), ok("getReady"), ev("AFTER_FORK"), ok("afterFork"), ev("CLEANUP"), ok("cleanup"), ev("UNLOAD"), ok("unload"),
]);
const sets = { shortest: walked.shortest, simple: [...walked.simple, loop] };

/** Which callback an outside event starts (none: UNLOAD from created). */
const STARTS: Record<string, string> = {
  LOAD: "load", CONFIG: "config", CONFIG_COMPLETE: "configComplete", GET_READY: "getReady",
  AFTER_FORK: "afterFork", CLEANUP: "cleanup", UNLOAD: "unload",
};
/** Calls that reject when their step fails (cleanup and unload are logged and never throw). */
const THROWS = new Set(["load", "config", "configComplete", "getReady", "afterFork"]);

class World {
  readonly log: string[] = [];
  readonly debug: string[] = [];
  readonly fail = new Set<string>();
  gate: { at: string; d: Deferred<void>; reached: boolean } | null = null;
  pending: Promise<unknown> | null = null;
  readonly stack: Stack;

  constructor() {
    const cb = async (name: string) => {
      this.log.push(name);
      if (this.gate?.at === name) {
        this.gate.reached = true;
        await this.gate.d.promise;
      }
      if (this.fail.has(name)) throw new Error(`${name} failed`);
    };
    const plugin: Plugin = {
      name: "p",
      load: () => cb("load"),
      config: () => cb("config"),
      configComplete: () => cb("configComplete"),
      getReady: () => cb("getReady"),
      afterFork: () => cb("afterFork"),
      cleanup: () => cb("cleanup"),
      unload: () => cb("unload"),
      open: () => ({}),
      getSize: () => 512,
      pread: (_h, b) => void b.fill(0),
    };
    this.stack = new Stack(plugin, [], { log: (m) => this.debug.push(m) });
  }

  get layer() {
    return this.stack.layers[0]!;
  }
}

async function run(path: WalkPath): Promise<void> {
  const w = new World();
  const events = path.steps.map((s) => s.event.type);
  const calls: Record<string, () => Promise<void>> = {
    LOAD: () => w.layer.load(),
    CONFIG: () => w.layer.config("k", "v"),
    CONFIG_COMPLETE: () => w.layer.configComplete(),
    GET_READY: () => w.layer.getReady(),
    AFTER_FORK: () => w.layer.afterFork(),
    CLEANUP: () => w.layer.cleanup(),
    UNLOAD: () => w.layer.unload(),
  };
  const expectLog: string[] = [];
  let started: string | null = null;
  const handlers: Record<string, (ev: unknown, i: number) => Promise<void>> = {
    "xstate.init": async () => {},
  };
  for (const t of EXTERNAL) {
    handlers[t] = async (_ev, i) => {
      const cb = STARTS[t]!;
      const outcome = events[i + 1];
      // UNLOAD from created unloads nothing: no callback, straight to unloaded.
      if (t === "UNLOAD" && w.layer.state === "created") {
        await calls[t]!();
        return;
      }
      if (outcome === `xstate.error.actor.${cb}`) w.fail.add(cb);
      w.gate = { at: cb, d: deferred(), reached: false };
      w.pending = calls[t]!();
      w.pending.catch(() => {});
      await flush();
      expect(w.gate.reached, `${t} invokes ${cb}`).toBe(true);
      expectLog.push(cb);
      started = cb;
    };
  }
  for (const id of IDS) {
    for (const ok of [true, false]) {
      handlers[`xstate.${ok ? "done" : "error"}.actor.${id}`] = async () => {
        expect(started).toBe(id);
        const p = w.pending!;
        w.gate!.d.resolve();
        w.gate = w.pending = null;
        started = null;
        if (ok || !THROWS.has(id)) await expect(p).resolves.toBeUndefined();
        else await expect(p).rejects.toThrow(`${id} failed`);
        w.fail.delete(id);
      };
    }
  }
  await replay(path, handlers, (value, i) => {
    expect(w.layer.state, `after ${events[i]}`).toBe(value);
    expect(w.log).toEqual(expectLog);
    const err = w.layer.lifecycle.getSnapshot().context.error;
    const firstFailure = events.slice(0, i + 1).find((e) => e.startsWith("xstate.error.actor."));
    if (firstFailure) expect(err).toMatch(new RegExp(`${firstFailure.split(".").at(-1)} failed`));
    else expect(err).toBeUndefined();
    // Filters may open contexts into a layer only while it is running.
    expect(w.layer.running).toBe(value === "running");
  });
  // A path that stops mid-way is finished, so nothing keeps running.
  if (w.pending) {
    w.gate!.d.resolve();
    await w.pending.catch(() => {});
  }
  await w.stack.unload();
}

describe("backendLifecycleMachine paths through the real layer runner (src/backend/layer.ts)", () => {
  it("the runner provides every declared step", () => {
    expect(unprovided(m).length).toBe(IDS.length);
    expect(unprovided(new World().layer.lifecycle.logic)).toEqual([]);
  });

  it("the paths take every transition, each failure edge included", () => {
    const got = taken([...sets.shortest, ...sets.simple]);
    expect(got).toEqual(allTransitions(m));
  });

  for (const [kind, paths] of Object.entries(sets)) {
    describe(`${kind} paths`, () => {
      for (const path of paths) it(path.description, () => run(path));
    });
  }

  it("an afterFork that throws fails its layer with that error, and the server's call rejects with it", async () => {
    const w = new World();
    w.fail.add("afterFork");
    await w.stack.load();
    await w.stack.configComplete();
    await w.stack.getReady();
    await expect(w.stack.afterFork()).rejects.toThrow("afterFork failed");
    expect(w.layer.state).toBe("failed");
    expect(w.layer.running).toBe(false);
    await w.stack.unload();
    expect(w.layer.state).toBe("unloaded");
    expect(w.log).toEqual(["load", "configComplete", "getReady", "afterFork", "unload"]);
  });
});
