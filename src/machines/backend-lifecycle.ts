// Backend lifecycle, one per layer (plugin or filter), as nbdkit runs it:
//
//   loaded --CONFIG_COMPLETE--> configured --GET_READY--> ready
//     --AFTER_FORK--> running --UNLOAD--> unloading --UNLOADED--> unloaded
//
// UNLOAD is accepted from every non-final state (a server stopped early
// still cleans up and unloads); FAILED (config_complete, get_ready or
// after_fork threw) ends in `failed` with the error kept in context.
//
// Pure data: the runner calls the layer's callbacks and reports the
// outcome as events; the one side effect the machine asks for is the
// entry action `runCleanupAndUnload`, supplied with machine.provide().
import { assign, setup } from "xstate";

export interface BackendLifecycleInput {
  /** The layer's name, for messages. */
  layer?: string;
}

export interface BackendLifecycleContext {
  layer: string;
  /** Why the layer failed (FAILED) or what cleanup/unload reported. */
  error?: string;
}

export type BackendLifecycleEvent =
  | { type: "CONFIG_COMPLETE" }
  | { type: "GET_READY" }
  | { type: "AFTER_FORK" }
  | { type: "UNLOAD" }
  | { type: "UNLOADED"; error?: string }
  | { type: "FAILED"; error?: string };

export const backendLifecycleMachine = setup({
  types: {
    context: {} as BackendLifecycleContext,
    events: {} as BackendLifecycleEvent,
    input: {} as BackendLifecycleInput | undefined,
  },
  guards: {
    eventHasError: ({ event }) => "error" in event && !!event.error,
  },
  actions: {
    /** Side effect: call cleanup then unload on the layer, then send UNLOADED. */
    runCleanupAndUnload: () => {},
    recordError: assign({
      error: ({ context, event }) =>
        context.error ?? ("error" in event && event.error ? event.error : event.type.toLowerCase()),
    }),
  },
}).createMachine({
  id: "backendLifecycle",
  description: "One layer (plugin or filter) from load to unload.",
  context: ({ input }) => ({ layer: input?.layer ?? "layer" }),
  initial: "loaded",
  states: {
    loaded: {
      description: "load() returned; config(key, value) calls arrive here.",
      on: {
        CONFIG_COMPLETE: { target: "configured" },
        FAILED: { target: "failed", actions: "recordError" },
        UNLOAD: { target: "unloading" },
      },
    },
    configured: {
      description: "config_complete() returned.",
      on: {
        GET_READY: { target: "ready" },
        FAILED: { target: "failed", actions: "recordError" },
        UNLOAD: { target: "unloading" },
      },
    },
    ready: {
      description: "get_ready() returned; the server may now fork/listen.",
      on: {
        AFTER_FORK: { target: "running" },
        FAILED: { target: "failed", actions: "recordError" },
        UNLOAD: { target: "unloading" },
      },
    },
    running: {
      description: "after_fork() returned: connections and filter-owned contexts are allowed.",
      on: {
        UNLOAD: { target: "unloading" },
      },
    },
    unloading: {
      description: "cleanup() then unload() are running.",
      entry: "runCleanupAndUnload",
      on: {
        UNLOADED: [
          { guard: "eventHasError", target: "unloaded", actions: "recordError" },
          { target: "unloaded" },
        ],
      },
    },
    unloaded: { type: "final" },
    failed: { type: "final" },
  },
  output: ({ context }) => ({ error: context.error }),
});
