// Transmission phase, phase events only: requests are plain code enabled
// by SERVING (one XState event costs 4-8 us; a request must cost less than
// that in total). The data loop (src/actors/transmission.ts) reports the
// phase events; the machine decides when reading stops and when the phase
// is over.
//
// - NBD_CMD_DISC: "The server MUST NOT ... close the connection while there
//   are outstanding requests"; it "MUST handle all outstanding requests"
//   first: DRAINING waits for every reply to be queued whole.
// - SHUTDOWN: "the server SHOULD wait for inflight requests to be serviced
//   prior to initiating a hard disconnect. A server MAY speed this process
//   up by issuing error replies. The error value issued in respect of these
//   requests and any subsequently received requests SHOULD be
//   NBD_ESHUTDOWN" (and "If the client receives an NBD_ESHUTDOWN error it
//   MUST initiate a soft disconnect"): SHUTTING_DOWN keeps reading, answers
//   new requests ESHUTDOWN, and ends once the client is quiet or
//   disconnects, or at SHUTDOWN_GRACE.
// - INPUT_ENDED (the client half-closed) and FATAL (a frame that cannot be
//   parsed): what was received is still answered (DRAINING).
// - CLIENT_CLOSED: nothing can reach the client any more: CLOSED at once,
//   and the export is closed without finalize.

import { assign, setup } from "xstate";
import { declaredAction, declaredActor } from "./effects.js";

export type TransmissionEvent =
  | { type: "NBD_CMD_DISC" }
  | { type: "FATAL"; reason: string }
  | { type: "INPUT_ENDED" }
  | { type: "SHUTDOWN" }
  | { type: "CLIENT_CLOSED" };

export interface TransmissionContext {
  reason?: string;
  /** The server was already shutting down when transmission began. */
  shuttingDown: boolean;
  /** The client is still there (finalize the export before closing it). */
  clientThere: boolean;
}

export interface TransmissionOutput {
  finalize: boolean;
  reason?: string;
}

/** Default SHUTDOWN_GRACE (ms): the longest a shutdown waits for a client to finish. */
export const SHUTDOWN_GRACE_MS = 5_000;

const because = (r: string) => ({ type: "recordReason" as const, params: { reason: r } });

export const transmissionMachine = setup({
  types: {
    context: {} as TransmissionContext,
    events: {} as TransmissionEvent,
    input: {} as { shuttingDown?: boolean } | undefined,
    output: {} as TransmissionOutput,
  },
  guards: {
    shutdownBefore: ({ context }) => context.shuttingDown,
  },
  actions: {
    /** Side effect: start parsing and serving requests. */
    startServing: declaredAction("startServing"),
    /** Side effect: every request read from now on is answered NBD_ESHUTDOWN without reaching the stack. */
    refuseRequests: declaredAction("refuseRequests"),
    /** Side effect: stop reading requests; replies already owed still go out. */
    stopReading: declaredAction("stopReading"),
    recordReason: assign({ reason: ({ context }, p: { reason: string }) => context.reason ?? p.reason }),
    recordFatal: assign({ reason: ({ context, event }) => context.reason ?? (event.type === "FATAL" ? event.reason : "fatal") }),
    clientGone: assign({ clientThere: false }),
  },
  actors: {
    /** Resolves once no request is in flight (every reply owed is queued whole). */
    awaitReplies: declaredActor("awaitReplies"),
    /** Resolves once nothing is in flight and the client has sent nothing for a moment. */
    awaitQuiet: declaredActor("awaitQuiet"),
  },
  delays: {
    SHUTDOWN_GRACE: SHUTDOWN_GRACE_MS,
  },
}).createMachine({
  id: "transmission",
  description: "Serving requests until the client disconnects or the server shuts down.",
  context: ({ input }) => ({ clientThere: true, shuttingDown: input?.shuttingDown ?? false }),
  initial: "SERVING",
  states: {
    SERVING: {
      entry: "startServing",
      always: { guard: "shutdownBefore", target: "SHUTTING_DOWN" },
      on: {
        NBD_CMD_DISC: { target: "DRAINING", actions: because("client sent NBD_CMD_DISC") },
        INPUT_ENDED: { target: "DRAINING", actions: because("client closed its sending side") },
        FATAL: { target: "DRAINING", actions: "recordFatal" },
        SHUTDOWN: "SHUTTING_DOWN",
        CLIENT_CLOSED: { target: "CLOSED", actions: ["clientGone", because("client closed the connection")] },
      },
    },
    SHUTTING_DOWN: {
      entry: "refuseRequests",
      invoke: { id: "awaitQuiet", src: "awaitQuiet", onDone: { target: "DRAINING", actions: because("the server is shutting down") } },
      after: { SHUTDOWN_GRACE: { target: "DRAINING", actions: because("the server is shutting down") } },
      on: {
        NBD_CMD_DISC: { target: "DRAINING", actions: because("client sent NBD_CMD_DISC") },
        INPUT_ENDED: { target: "DRAINING", actions: because("client closed its sending side") },
        FATAL: { target: "DRAINING", actions: "recordFatal" },
        CLIENT_CLOSED: { target: "CLOSED", actions: ["clientGone", because("client closed the connection")] },
      },
    },
    DRAINING: {
      entry: "stopReading",
      invoke: { id: "awaitReplies", src: "awaitReplies", onDone: "CLOSED" },
      on: {
        CLIENT_CLOSED: { target: "CLOSED", actions: ["clientGone", because("client closed the connection")] },
      },
    },
    CLOSED: { type: "final" },
  },
  output: ({ context }) => ({ finalize: context.clientThere, reason: context.reason }),
});
