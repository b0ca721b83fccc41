// One opened handle (context) of one layer, as nbdkit drives it:
//
//   opening --OPENED--> preparing --PREPARED--> open --FINALIZE-->
//   finalizing --FINALIZED--> closing --CLOSED--> closed
//
// Failure edges from every step:
//   OPEN_FAILED      opening    -> failed   (nothing was opened: nothing to close)
//   PREPARE_FAILED   preparing  -> closing  (close without finalize)
//   FINALIZE_FAILED  finalizing -> closing  (still close)
//   CLOSE_FAILED     closing    -> closed   (error recorded)
// CLOSE from open is the connection that went away after an error: nbdkit
// closes without finalizing. A clean disconnect sends FINALIZE instead.
//
// Pure data: callOpen/callPrepare/callFinalize/callClose are the side
// effects the runner supplies with machine.provide(); it reports each
// outcome back as an event. The first error is kept (the root cause).
import { assign, setup } from "xstate";

export interface ContextMachineContext {
  /** The first failure on the way (open, prepare, finalize or close). */
  error?: string;
}

export type ContextMachineEvent =
  | { type: "OPENED" }
  | { type: "OPEN_FAILED"; error?: string }
  | { type: "PREPARED" }
  | { type: "PREPARE_FAILED"; error?: string }
  | { type: "FINALIZE" }
  | { type: "FINALIZED" }
  | { type: "FINALIZE_FAILED"; error?: string }
  | { type: "CLOSE" }
  | { type: "CLOSED" }
  | { type: "CLOSE_FAILED"; error?: string };

export interface ContextMachineOutput {
  error?: string;
}

export const contextMachine = setup({
  types: {
    context: {} as ContextMachineContext,
    events: {} as ContextMachineEvent,
    output: {} as ContextMachineOutput,
  },
  actions: {
    /** Side effect: call the layer's open(readonly, exportName, tls). */
    callOpen: () => {},
    /** Side effect: call prepare(handle, readonly). */
    callPrepare: () => {},
    /** Side effect: call finalize(handle). */
    callFinalize: () => {},
    /** Side effect: call close(handle). */
    callClose: () => {},
    recordError: assign({
      error: ({ context, event }) =>
        context.error ?? ("error" in event && event.error ? event.error : event.type.toLowerCase()),
    }),
  },
}).createMachine({
  id: "context",
  description: "One opened handle of one layer, from open to close.",
  context: {},
  initial: "opening",
  states: {
    opening: {
      entry: "callOpen",
      on: {
        OPENED: { target: "preparing" },
        OPEN_FAILED: { target: "failed", actions: "recordError" },
      },
    },
    preparing: {
      entry: "callPrepare",
      on: {
        PREPARED: { target: "open" },
        PREPARE_FAILED: { target: "closing", actions: "recordError" },
      },
    },
    open: {
      description: "Serving requests (data calls are plain code, not events).",
      on: {
        FINALIZE: { target: "finalizing" },
        CLOSE: { target: "closing" },
      },
    },
    finalizing: {
      entry: "callFinalize",
      on: {
        FINALIZED: { target: "closing" },
        FINALIZE_FAILED: { target: "closing", actions: "recordError" },
      },
    },
    closing: {
      entry: "callClose",
      on: {
        CLOSED: { target: "closed" },
        CLOSE_FAILED: { target: "closed", actions: "recordError" },
      },
    },
    closed: { type: "final" },
    failed: { type: "final" },
  },
  output: ({ context }) => ({ error: context.error }),
});
