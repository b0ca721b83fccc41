// One opened handle (context) of one layer, as nbdkit drives it. Each step
// is an invoked effect provided by the runner (src/backend/chain.ts); the
// order across layers (open outer->inner, prepare inner->outer, finalize
// then close outer->inner) comes from each step acting on the layer below
// through that layer's own machine.
//
//   opening --> opened --PREPARE--> preparing --> open --FINALIZE--> finalizing
//     --> finalized --CLOSE--> closing --> closed
//
// Failure edges:
//   opening fails     -> failed       (nothing was opened: nothing to close)
//   preparing fails   -> unprepared   (close without finalize: CLOSE)
//   finalizing fails  -> finalized    (still close; the error kept)
//   closing fails     -> closed       (the error kept)
// CLOSE from opened or open is a connection that failed or went away: as
// nbdkit, it closes without finalizing. The first error is kept.
import { assign, setup } from "xstate";
import { declaredActor } from "./effects.js";

export interface ContextMachineInput {
  /** The layer's name, for messages. */
  layer?: string;
}

export interface ContextMachineContext {
  layer: string;
  /** The first failure on the way (open, prepare, finalize or close). */
  error?: string;
}

export type ContextMachineEvent = { type: "PREPARE" } | { type: "FINALIZE" } | { type: "CLOSE" };

export interface ContextMachineOutput {
  error?: string;
}


export const contextMachine = setup({
  types: {
    context: {} as ContextMachineContext,
    events: {} as ContextMachineEvent,
    input: {} as ContextMachineInput | undefined,
    output: {} as ContextMachineOutput,
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
    /** open(readonly, exportName, tls): a filter's may open the layer below (next). */
    open: declaredActor("open"),
    /** prepare the layer below, then this layer's prepare(); then its capabilities are known. */
    prepare: declaredActor("prepare"),
    /** this layer's finalize(), then the layer below's. */
    finalize: declaredActor("finalize"),
    /** this layer's close(), then the layer below's (always). */
    close: declaredActor("close"),
  },
}).createMachine({
  id: "context",
  description: "One opened handle of one layer, from open to close.",
  context: ({ input }) => ({ layer: input?.layer ?? "layer" }),
  initial: "opening",
  states: {
    opening: {
      invoke: { id: "open", src: "open", onDone: "opened", onError: { target: "failed", actions: { type: "recordError" as const, params: { step: "open" } } } },
    },
    opened: {
      description: "open() returned; waiting for the whole chain to be open.",
      on: { PREPARE: "preparing", CLOSE: "closing" },
    },
    preparing: {
      invoke: { id: "prepare", src: "prepare", onDone: "open", onError: { target: "unprepared", actions: { type: "recordError" as const, params: { step: "prepare" } } } },
    },
    unprepared: {
      description: "prepare failed here or below: closed without finalize.",
      on: { CLOSE: "closing" },
    },
    open: {
      description: "Serving requests (data calls are plain code, not events).",
      on: { FINALIZE: "finalizing", CLOSE: "closing" },
    },
    finalizing: {
      invoke: { id: "finalize", src: "finalize", onDone: "finalized", onError: { target: "finalized", actions: { type: "recordError" as const, params: { step: "finalize" } } } },
    },
    finalized: {
      on: { CLOSE: "closing" },
    },
    closing: {
      invoke: { id: "close", src: "close", onDone: "closed", onError: { target: "closed", actions: { type: "recordError" as const, params: { step: "close" } } } },
    },
    closed: { type: "final" },
    failed: { type: "final" },
  },
  output: ({ context }) => ({ error: context.error }),
});
