// Backend lifecycle, one per layer (plugin or filter), as nbdkit runs it.
// Each step is an invoked effect (the layer's callback), provided by the
// runner (src/backend/layer.ts); the machine alone sequences them:
//
//   created --LOAD--> loading --> loaded
//   loaded --CONFIG--> configuring --> loaded        (once per key=value)
//   loaded --CONFIG_COMPLETE--> completing --> configured
//   configured --GET_READY--> gettingReady --> ready
//   ready --AFTER_FORK--> forking --> running         (filters may open contexts into a running layer)
//   running --CLEANUP--> cleaningUp --> cleanedUp
//   {loaded, configured, ready, cleanedUp, failed} --UNLOAD--> unloading --> unloaded
//
// A failing load, config, config_complete, get_ready or after_fork ends in
// `failed` (the error kept; the server stops with it); `failed` still
// unloads. A failing cleanup or unload is recorded and the sequence goes on
// (as nbdkit: every layer is cleaned up and unloaded).
import { assign, setup } from "xstate";
import { declaredActor } from "./effects.js";

export interface BackendLifecycleInput {
  /** The layer's name, for messages. */
  layer?: string;
}

export interface BackendLifecycleContext {
  layer: string;
  /** The first failure: which step and why. */
  error?: string;
}

export type BackendLifecycleEvent =
  | { type: "LOAD" }
  | { type: "CONFIG"; key: string; value: string }
  | { type: "CONFIG_COMPLETE" }
  | { type: "GET_READY" }
  | { type: "AFTER_FORK" }
  | { type: "CLEANUP" }
  | { type: "UNLOAD" };


export const backendLifecycleMachine = setup({
  types: {
    context: {} as BackendLifecycleContext,
    events: {} as BackendLifecycleEvent,
    input: {} as BackendLifecycleInput | undefined,
  },
  actions: {
    /** Keep the first failure: the step and the error's message. */
    recordError: assign({
      error: ({ context, event }, p: { step: string }) => {
        if (context.error !== undefined) return context.error;
        const e = (event as { error?: unknown }).error;
        return `${p.step}: ${e instanceof Error ? e.message : String(e)}`;
      },
    }),
  },
  actors: {
    /** load() */
    load: declaredActor("load"),
    /** config(key, value), offered to this layer (a filter passes what it does not own below). */
    config: declaredActor<{ key: string; value: string }>("config"),
    /** config_complete() (a filter's calls the layer below's through next). */
    configComplete: declaredActor("configComplete"),
    /** get_ready() */
    getReady: declaredActor("getReady"),
    /** after_fork(): the layer below is already running. */
    afterFork: declaredActor("afterFork"),
    /** cleanup(), then close what this filter still holds open below. */
    cleanup: declaredActor("cleanup"),
    /** unload() */
    unload: declaredActor("unload"),
  },
}).createMachine({
  id: "backendLifecycle",
  description: "One layer (plugin or filter) from load to unload.",
  context: ({ input }) => ({ layer: input?.layer ?? "layer" }),
  initial: "created",
  states: {
    created: {
      on: { LOAD: "loading", UNLOAD: "unloaded" },
    },
    loading: {
      invoke: { id: "load", src: "load", onDone: "loaded", onError: { target: "failed", actions: { type: "recordError" as const, params: { step: "load" } } } },
    },
    loaded: {
      description: "load() returned; config(key, value) calls arrive here.",
      on: { CONFIG: "configuring", CONFIG_COMPLETE: "completing", UNLOAD: "unloading" },
    },
    configuring: {
      invoke: {
        id: "config",
        src: "config",
        input: ({ event }) => (event.type === "CONFIG" ? { key: event.key, value: event.value } : { key: "", value: "" }),
        onDone: "loaded",
        onError: { target: "failed", actions: { type: "recordError" as const, params: { step: "config" } } },
      },
    },
    completing: {
      invoke: { id: "configComplete", src: "configComplete", onDone: "configured", onError: { target: "failed", actions: { type: "recordError" as const, params: { step: "config_complete" } } } },
    },
    configured: {
      description: "config_complete() returned.",
      on: { GET_READY: "gettingReady", UNLOAD: "unloading" },
    },
    gettingReady: {
      invoke: { id: "getReady", src: "getReady", onDone: "ready", onError: { target: "failed", actions: { type: "recordError" as const, params: { step: "get_ready" } } } },
    },
    ready: {
      description: "get_ready() returned; the server may now listen.",
      on: { AFTER_FORK: "forking", UNLOAD: "unloading" },
    },
    forking: {
      invoke: { id: "afterFork", src: "afterFork", onDone: "running", onError: { target: "failed", actions: { type: "recordError" as const, params: { step: "after_fork" } } } },
    },
    running: {
      description: "after_fork() returned: connections and filter-owned contexts are allowed.",
      on: { CLEANUP: "cleaningUp" },
    },
    cleaningUp: {
      invoke: { id: "cleanup", src: "cleanup", onDone: "cleanedUp", onError: { target: "cleanedUp", actions: { type: "recordError" as const, params: { step: "cleanup" } } } },
    },
    cleanedUp: {
      description: "cleanup() returned and nothing this layer opened below is still open.",
      on: { UNLOAD: "unloading" },
    },
    failed: {
      description: "A step failed: the server stops; the layer is still unloaded.",
      on: { UNLOAD: "unloading" },
    },
    unloading: {
      invoke: { id: "unload", src: "unload", onDone: "unloaded", onError: { target: "unloaded", actions: { type: "recordError" as const, params: { step: "unload" } } } },
    },
    unloaded: { type: "final" },
  },
  output: ({ context }) => ({ error: context.error }),
});
