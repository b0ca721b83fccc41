// Model-based test of the REAL per-context code (src/backend/chain.ts, the
// runner of contextMachine): every shortest and every simple path of the
// machine (@xstate/graph) is replayed against a Stack (a test plugin, or a
// pass-through filter above it) whose callbacks succeed or throw on demand.
//
// The machine invokes its steps, so a path's events are the outside ones
// (PREPARE, FINALIZE, CLOSE: the real prepareContext/finalizeContext/
// closeContext calls) and the outcomes of the invoked steps
// (xstate.done.actor.STEP / xstate.error.actor.STEP: the layer's callback
// returning or throwing). Each outside event holds the first callback the
// step reaches at a gate, so the outermost context is seen in the path's
// busy state; the outcome event then opens the gate, with the callback set
// to throw when the path says error. After every step the outermost
// context's real machine is in the path's state, and the callbacks ran in
// nbdkit's order: open outer->inner, prepare inner->outer, finalize and
// close outer->inner; a failed open closes nothing, a failed prepare closes
// without finalize, a finalize failure still closes, a close failure is
// recorded and the chain below still closes.
import { describe, expect, it } from "vitest";
import { closeContext, finalizeContext, openContext, prepareContext, type Opened } from "../../src/backend/chain.js";
import { Stack } from "../../src/backend/stack.js";
import type { Filter, Plugin } from "../../src/backend/types.js";
import { contextMachine as m } from "../../src/machines/context.js";
import { unprovided } from "../../src/machines/effects.js";
import { deferred, flush, type Deferred } from "../machines/helpers.js";
import { allTransitions, outcomes, replay, taken, walk, type WalkPath } from "../machines/paths.js";

interface Config {
  name: string;
  filter: boolean;
  /** Which layer's callback throws on an error outcome: the outermost (else the plugin). */
  outerFails: boolean;
}

const CONFIGS: Config[] = [
  { name: "plugin", filter: false, outerFails: false },
  { name: "filter+plugin, the plugin fails", filter: true, outerFails: false },
  { name: "filter+plugin, the filter fails", filter: true, outerFails: true },
];

/** A Stack whose callbacks log, may wait at a gate, and throw when told to. */
class World {
  readonly names: string[];
  readonly log: string[] = [];
  readonly stackLog: string[] = [];
  readonly stack: Stack;
  readonly fail = new Set<string>();
  gate: { at: string; d: Deferred<void>; reached: boolean } | null = null;
  pending: Promise<unknown> | null = null;
  opened: Opened | null = null;

  constructor(filter: boolean) {
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
    this.stack = new Stack(plugin, filter ? [f] : [], { log: (msg) => this.stackLog.push(msg) });
    this.names = filter ? ["f", "p"] : ["p"];
  }

  /** Start a real call with the callback `at` held until release(). */
  async hold(at: string, call: () => Promise<unknown>): Promise<void> {
    this.gate = { at, d: deferred(), reached: false };
    this.pending = call();
    this.pending.catch(() => {});
    await flush();
    expect(this.gate.reached, `${at} is the first callback of the step`).toBe(true);
  }

  async release(): Promise<unknown> {
    const { gate, pending } = this;
    this.gate = this.pending = null;
    gate!.d.resolve();
    return pending;
  }

  /** Every opened handle's machine, outer->inner. */
  chain(): Opened[] {
    const out: Opened[] = [];
    for (let o: Opened | null = this.opened; o; o = o.lower) out.push(o);
    return out;
  }
}

const STEPS = ["open", "prepare", "finalize", "close"];
const OUTCOMES = outcomes(STEPS).map((e) => e.type);
const sets = walk(m, [{ type: "PREPARE" }, { type: "FINALIZE" }, { type: "CLOSE" }, ...outcomes(STEPS)]);

async function run(cfg: Config, path: WalkPath): Promise<void> {
  const w = new World(cfg.filter);
  const { names } = w;
  const outer = names[0]!;
  const inner = names.at(-1)!;
  const thrower = cfg.outerFails ? outer : inner;
  const inward = names;
  const outward = [...names].reverse();
  const events = path.steps.map((s) => s.event.type);
  let at = 0;
  const next = () => events[at + 1];
  const seen: string[] = [];

  const events_: Record<string, () => Promise<void>> = {
    "xstate.init": async () => {
      if (next() === "xstate.error.actor.open") w.fail.add(`${thrower}.open`);
      await w.hold(`${outer}.open`, () => openContext(w.stack.top, { readonly: false, exportName: "", tls: false }));
    },
    "xstate.done.actor.open": async () => {
      w.opened = (await w.release()) as Opened;
    },
    "xstate.error.actor.open": async () => {
      await expect(w.release()).rejects.toThrow(`${thrower}.open failed`);
    },
    PREPARE: async () => {
      if (next() === "xstate.error.actor.prepare") w.fail.add(`${thrower}.prepare`);
      // Prepare is inner->outer: the plugin's is the first callback.
      await w.hold(`${inner}.prepare`, () => prepareContext(w.opened!));
    },
    "xstate.done.actor.prepare": async () => {
      await w.release();
    },
    "xstate.error.actor.prepare": async () => {
      await expect(w.release()).rejects.toThrow(`${thrower}.prepare failed`);
    },
    FINALIZE: async () => {
      if (next() === "xstate.error.actor.finalize") w.fail.add(`${thrower}.finalize`);
      await w.hold(`${outer}.finalize`, () => finalizeContext(w.opened!));
    },
    "xstate.done.actor.finalize": async () => {
      await w.release();
    },
    "xstate.error.actor.finalize": async () => {
      await expect(w.release()).rejects.toThrow(`${thrower}.finalize failed`);
    },
    CLOSE: async () => {
      if (next() === "xstate.error.actor.close") w.fail.add(`${thrower}.close`);
      await w.hold(`${outer}.close`, () => closeContext(w.opened!));
    },
    "xstate.done.actor.close": async () => {
      await expect(w.release()).resolves.toBeUndefined();
    },
    "xstate.error.actor.close": async () => {
      // closeContext never throws: the failure is kept and logged, and the chain below still closes.
      await expect(w.release()).resolves.toBeUndefined();
      expect(w.stackLog).toContain(`${thrower}: close: ${thrower}.close failed`);
    },
  };

  const check = (value: string) => {
    const chain = w.chain();
    if (chain.length) expect(chain[0]!.state, `the outermost context's machine after ${seen.at(-1)}`).toBe(value);
    // nbdkit's order, whatever the path: each callback kind runs in its direction, at most once per layer.
    const calls = (cb: string) => w.log.filter((c) => c.endsWith(`.${cb}`)).map((c) => c.split(".")[0]);
    const prefixOf = (got: string[], order: string[]) => expect(order.slice(0, got.length)).toEqual(got);
    prefixOf(calls("open"), inward);
    prefixOf(calls("prepare"), outward);
    prefixOf(calls("finalize"), inward);
    for (const n of names) expect(w.log.filter((c) => c === `${n}.close`).length).toBeLessThanOrEqual(1);
    if (seen.includes("xstate.error.actor.open")) expect(w.log.filter((c) => /\.(close|prepare|finalize)$/.test(c))).toEqual([]);
    if (!seen.includes("FINALIZE")) expect(calls("finalize")).toEqual([]);
    // A failed prepare closes without finalize.
    if (seen.includes("xstate.error.actor.prepare")) expect(calls("finalize")).toEqual([]);
    if (value === "closed") {
      expect(calls("close")).toEqual(inward);
      for (const o of chain) expect(o.actor.getSnapshot().status).toBe("done");
      const errs = chain.map((o) => o.error);
      const failed = seen.find((e) => e.startsWith("xstate.error.actor."));
      // The layer that threw keeps the first error; a failed close below is not the layer above's.
      if (failed) expect(errs[names.indexOf(thrower)], "the first error is kept").toMatch(new RegExp(`^${failed.split(".").at(-1)}: `));
      else expect(errs.every((e) => e === undefined)).toBe(true);
    }
    if (value === "failed") expect(calls("close")).toEqual([]);
  };

  await replay(
    path,
    Object.fromEntries(
      Object.keys(events_).map((t) => [
        t,
        async (_ev, i) => {
          at = i;
          await events_[t]!();
          seen.push(t);
        },
      ]),
    ),
    (value) => check(value),
  );

  // A path that ends mid-way is completed, so no machine keeps running.
  if (w.pending) await w.release().catch(() => {});
  if (w.opened) await closeContext(w.opened);
  for (const o of w.chain()) expect(["done", "stopped"]).toContain(o.actor.getSnapshot().status);
}

describe("contextMachine paths through the real chain runner (src/backend/chain.ts)", () => {
  it("declares its four steps, and the runner provides every one (it refuses a machine with a stub left)", async () => {
    expect(unprovided(m)).toEqual(["actor close", "actor finalize", "actor open", "actor prepare"]);
    const w = new World(false);
    const o = await openContext(w.stack.top, { readonly: false, exportName: "", tls: false });
    expect(unprovided(o.actor.logic)).toEqual([]);
    await closeContext(o);
  });

  it("the paths take every transition of the machine, failure edges included", () => {
    const got = taken([...sets.shortest, ...sets.simple]);
    expect(got).toEqual(allTransitions(m));
    for (const e of OUTCOMES.filter((x) => x.includes("error"))) expect(got.some((t) => t.endsWith(e)), e).toBe(true);
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
      const opened = await openContext(w.stack.top, { readonly: false, exportName: "", tls: false });
      w.opened = opened;
      if (cb === "prepare") await expect(prepareContext(opened)).rejects.toThrow("f.prepare failed");
      else {
        await prepareContext(opened);
        await expect(finalizeContext(opened)).rejects.toThrow("f.finalize failed");
      }
      expect(w.chain().map((o) => o.state)).toEqual([cb === "prepare" ? "unprepared" : "finalized", "open"]);
      await closeContext(opened);
      expect(w.chain().map((o) => o.state)).toEqual(["closed", "closed"]);
      const tail = cb === "prepare" ? ["f.prepare"] : ["f.prepare", "f.finalize"];
      expect(w.log).toEqual(["f.open", "p.open", "p.prepare", ...tail, "f.close", "p.close"]);
    }
  });
});
