// Model-based test of the REAL per-context lifecycle code (src/backend/opened.ts):
// every shortest and every simple path of contextMachine (@xstate/graph) is
// replayed against a Stack (a test plugin, or a pass-through filter above it)
// whose callbacks succeed or throw on demand. Events map to real calls:
//   xstate.init + OPENED/OPEN_FAILED        one openChain
//   PREPARED/PREPARE_FAILED                 prepareChain
//   FINALIZE + FINALIZED/FINALIZE_FAILED    one finalizeChain
//   CLOSE + CLOSED/CLOSE_FAILED             one closeChain (from open)
//   CLOSED/CLOSE_FAILED (from closing)      closeChain
// A step that starts a call another event completes (init, FINALIZE, CLOSE)
// holds the outermost layer's callback at a gate: there the outermost
// lifecycle is in the path's state and the layers below are not reached yet.
// After every other step each layer's real lifecycle (Opened.lifecycle down
// the chain, captured through the Stack's inspect option, so failed opens
// are seen too) is in the path's state, and the callbacks ran in nbdkit's
// order: open outer->inner, prepare inner->outer, finalize and close
// outer->inner; a failed open closes nothing, a failed prepare closes without
// finalize, a finalize failure still closes, a close failure is recorded and
// the chain below still closes.
import { createTestModel } from "@xstate/graph";
import { describe, expect, it } from "vitest";
import type { Actor, AnyActor, InspectionEvent, SnapshotFrom } from "xstate";
import { closeChain, finalizeChain, openChain, prepareChain, type Opened } from "../../src/backend/opened.js";
import { Stack } from "../../src/backend/stack.js";
import type { Filter, Plugin } from "../../src/backend/types.js";
import { contextMachine as m } from "../../src/machines/context.js";
import { deferred, flush, type Deferred } from "../machines/helpers.js";

type Snap = SnapshotFrom<typeof m>;
type Lifecycle = Actor<typeof m>;

interface Config {
  name: string;
  filter: boolean;
  /** OPEN_FAILED/CLOSE_FAILED thrown by the outermost layer (else by the plugin). */
  outerFails: boolean;
}

const CONFIGS: Config[] = [
  { name: "plugin", filter: false, outerFails: false },
  { name: "filter+plugin, the plugin fails", filter: true, outerFails: false },
  { name: "filter+plugin, the filter's open/close fails", filter: true, outerFails: true },
];

/** A Stack whose callbacks log, may wait at a gate, and throw when told to. */
class World {
  readonly names: string[];
  readonly log: string[] = [];
  readonly stackLog: string[] = [];
  /** Every context lifecycle the real code created, in creation order (outer->inner). */
  readonly actors: Lifecycle[] = [];
  readonly stack: Stack;
  readonly fail = new Set<string>();
  gate: { at: string; d: Deferred<void> } | null = null;
  pending: Promise<unknown> | null = null;
  opened: Opened | null = null;

  constructor(filter: boolean) {
    const cb = async (name: string) => {
      this.log.push(name);
      if (this.gate?.at === name) await this.gate.d.promise;
      if (this.fail.has(name)) throw new Error(`${name} failed`);
    };
    const plugin: Plugin = {
      name: "p",
      open: async () => (await cb("p.open"), {}),
      prepare: () => cb("p.prepare"),
      finalize: () => cb("p.finalize"),
      close: () => cb("p.close"),
      getSize: () => 1024,
      pread: (_h, buf) => void buf.fill(0),
    };
    const f: Filter = {
      name: "f",
      open: async ({ next }) => {
        await cb("f.open");
        await next();
        return {};
      },
      prepare: () => cb("f.prepare"),
      finalize: () => cb("f.finalize"),
      close: () => cb("f.close"),
    };
    const inspect = (ev: InspectionEvent) => {
      if (ev.type === "@xstate.actor" && (ev.actorRef as AnyActor).logic === m) this.actors.push(ev.actorRef as Lifecycle);
    };
    this.stack = new Stack(plugin, filter ? [f] : [], { log: (msg) => this.stackLog.push(msg), inspect });
    this.names = filter ? ["f", "p"] : ["p"];
  }

  /** Start a real call with the callback `at` held until release(). */
  hold(at: string, call: () => Promise<unknown>): void {
    this.gate = { at, d: deferred() };
    this.pending = call();
  }

  async release(): Promise<unknown> {
    const { gate, pending } = this;
    this.gate = this.pending = null;
    gate!.d.resolve();
    return pending;
  }

  /** The real lifecycles, outer->inner: the Opened chain's once open, else what inspect saw. */
  lifecycles(): Lifecycle[] {
    if (!this.opened) return this.actors;
    const chain: Lifecycle[] = [];
    for (let o: Opened | null = this.opened; o; o = o.lower) chain.push(o.lifecycle);
    expect(chain.length).toBe(this.actors.length);
    chain.forEach((a, i) => expect(a, "Opened.lifecycle is the actor the code created").toBe(this.actors[i]));
    return chain;
  }
}

const EVENTS = ["OPENED", "OPEN_FAILED", "PREPARED", "PREPARE_FAILED", "FINALIZE", "FINALIZED", "FINALIZE_FAILED", "CLOSE", "CLOSED", "CLOSE_FAILED"];

const model = createTestModel(m);
type TestPath = ReturnType<typeof model.getSimplePaths>[number];

async function run(cfg: Config, path: TestPath): Promise<void> {
  const w = new World(cfg.filter);
  const { names } = w;
  const outer = names[0]!;
  const inner = names.at(-1)!;
  const idx = (layer: string) => names.indexOf(layer);
  /** Expected callback log, the per-layer first error, and what the test has done. */
  const want: string[] = [];
  const errs: (string | undefined)[] = names.map(() => undefined);
  const seen: string[] = [];
  let mid = false;
  let prev = "";

  const expectCalls = (cb: string, order: string[], upTo?: string) => {
    const layers = upTo ? order.slice(0, order.indexOf(upTo) + 1) : order;
    for (const c of layers.map((n) => `${n}.${cb}`)) if (!want.includes(c)) want.push(c);
  };
  const recordError = (thrower: string, cb: string, layers: string[]) => {
    for (const n of layers) errs[idx(n)] ??= `Error: ${thrower}.${cb} failed`;
  };
  const inward = names;
  const outward = [...names].reverse();
  const opened = () => w.opened!;

  const close = async (failing: boolean) => {
    const thrower = cfg.outerFails ? outer : inner;
    if (failing) w.fail.add(`${thrower}.close`);
    if (w.pending) await expect(w.release()).resolves.toBeUndefined();
    else await expect(closeChain(opened())).resolves.toBeUndefined();
    expectCalls("close", inward);
    if (failing) {
      recordError(thrower, "close", [thrower]);
      expect(w.stackLog).toEqual([`${thrower}: close: Error: ${thrower}.close failed`]);
    }
  };

  const events: Record<string, () => Promise<void>> = {
    "xstate.init": async () => {
      w.hold(`${outer}.open`, () => openChain(w.stack.top, false, "", false));
      await flush();
      expectCalls("open", inward, outer);
      mid = true;
    },
    OPENED: async () => {
      w.opened = (await w.release()) as Opened;
      expectCalls("open", inward);
    },
    OPEN_FAILED: async () => {
      const thrower = cfg.outerFails ? outer : inner;
      w.fail.add(`${thrower}.open`);
      await expect(w.release()).rejects.toThrow(`${thrower}.open failed`);
      expectCalls("open", inward, thrower);
      recordError(thrower, "open", inward.slice(0, idx(thrower) + 1));
    },
    PREPARED: async () => {
      await prepareChain(opened());
      expectCalls("prepare", outward);
    },
    // Prepare runs inner->outer: the plugin's failure is every layer's (a
    // filter's failure leaves the layers below open: see the last test).
    PREPARE_FAILED: async () => {
      w.fail.add(`${inner}.prepare`);
      await expect(prepareChain(opened())).rejects.toThrow(`${inner}.prepare failed`);
      expectCalls("prepare", outward, inner);
      recordError(inner, "prepare", names);
    },
    FINALIZE: async () => {
      w.hold(`${outer}.finalize`, () => finalizeChain(opened()));
      await flush();
      expectCalls("finalize", inward, outer);
      mid = true;
    },
    FINALIZED: async () => {
      await w.release();
      expectCalls("finalize", inward);
    },
    // The plugin's finalize fails (innermost, so every layer reaches closing).
    FINALIZE_FAILED: async () => {
      w.fail.add(`${inner}.finalize`);
      await expect(w.release()).rejects.toThrow(`${inner}.finalize failed`);
      expectCalls("finalize", inward);
      recordError(inner, "finalize", [inner]);
    },
    CLOSE: async () => {
      w.hold(`${outer}.close`, () => closeChain(opened()));
      await flush();
      expectCalls("close", inward, outer);
      mid = true;
    },
    CLOSED: () => close(false),
    CLOSE_FAILED: () => close(true),
  };

  const check = (s: Snap) => {
    const value = String(s.value);
    const lcs = w.lifecycles();
    const states = lcs.map((a) => String(a.getSnapshot().value));
    if (mid) {
      // A call held in the outermost layer's callback: the layers below are not reached yet.
      expect(states[0]).toBe(value);
      expect(states.slice(1)).toEqual(states.slice(1).map(() => prev));
      if (seen.length === 0) expect(lcs.length, "open is outer->inner: nothing below yet").toBe(1);
    } else {
      expect(states).toEqual(lcs.map(() => value));
    }
    expect(w.log).toEqual(want);
    expect(lcs.map((a) => a.getSnapshot().context.error)).toEqual(errs.slice(0, lcs.length));
    if (!seen.includes("CLOSE_FAILED")) expect(w.stackLog).toEqual([]);
    // nbdkit's rules, whatever the path.
    if (seen.includes("OPEN_FAILED")) expect(w.log.filter((c) => /\.(close|prepare)$/.test(c))).toEqual([]);
    if (!seen.includes("FINALIZE")) expect(w.log.filter((c) => c.endsWith(".finalize"))).toEqual([]);
    for (const n of names) expect(w.log.filter((c) => c === `${n}.close`).length).toBeLessThanOrEqual(1);
    if (value === "closed" || value === "failed") {
      // Final: no lifecycle left running; a closed chain closed every layer once.
      for (const a of lcs) expect(a.getSnapshot().status).toBe("done");
      if (value === "closed") expect(w.log.filter((c) => c.endsWith(".close"))).toEqual(names.map((n) => `${n}.close`));
    }
    prev = value;
    mid = false;
  };

  await path.test({
    events: Object.fromEntries(
      ["xstate.init", ...EVENTS].map((t) => [
        t,
        async () => {
          await events[t]!();
          if (t !== "xstate.init") seen.push(t);
        },
      ]),
    ),
    states: { "*": (s) => check(s as Snap) },
  });

  // A path that ends mid-way (e.g. in closing) is closed, so no actor keeps running.
  if (w.pending) await w.release().catch(() => {});
  if (w.opened && w.actors.some((a) => a.getSnapshot().status === "active")) await closeChain(w.opened);
  for (const a of w.actors) expect(["done", "stopped"]).toContain(a.getSnapshot().status);
}

describe("contextMachine paths through the real openChain/prepareChain/finalizeChain/closeChain", () => {
  const sets = { shortest: model.getShortestPaths(), simple: model.getSimplePaths() };

  it("the paths take every transition of the machine", () => {
    const taken = new Set(
      [...sets.shortest, ...sets.simple].flatMap((p) => p.steps.slice(1).map((s, i) => `${String(p.steps[i]!.state.value)} ${s.event.type}`)),
    );
    const all = Object.values(m.root.states).flatMap((st) => [...st.transitions.keys()].map((e) => `${st.key} ${e}`));
    expect([...taken].sort()).toEqual(all.sort());
  });

  for (const cfg of CONFIGS) {
    for (const [kind, paths] of Object.entries(sets)) {
      describe(`${cfg.name}: ${kind} paths`, () => {
        for (const path of paths) it(path.description, () => run(cfg, path));
      });
    }
  }

  it("a filter's prepare or finalize failure leaves the plugin open; closing then closes it (nbdkit's order)", async () => {
    for (const cb of ["prepare", "finalize"]) {
      const w = new World(true);
      w.fail.add(`f.${cb}`);
      const opened = await openChain(w.stack.top, false, "", false);
      w.opened = opened;
      if (cb === "prepare") await expect(prepareChain(opened)).rejects.toThrow("f.prepare failed");
      else {
        await prepareChain(opened);
        await expect(finalizeChain(opened)).rejects.toThrow("f.finalize failed");
      }
      expect(w.lifecycles().map((a) => a.getSnapshot().value)).toEqual(["closing", "open"]);
      await closeChain(opened);
      expect(w.lifecycles().map((a) => a.getSnapshot().value)).toEqual(["closed", "closed"]);
      expect(w.lifecycles().map((a) => a.getSnapshot().status)).toEqual(["done", "done"]);
      const tail = cb === "prepare" ? ["f.prepare"] : ["f.prepare", "f.finalize"];
      expect(w.log).toEqual(["f.open", "p.open", "p.prepare", ...tail, "f.close", "p.close"]);
    }
  });
});
