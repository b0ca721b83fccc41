// One client connection, from accept to close: it invokes preconnect, then
// the handshake, options and transmission machines in turn, and owns the
// teardown: the chosen export is finalized (unless the client vanished) and
// closed, what was written is flushed, then the socket is destroyed. Every
// phase ends here, so no connection can skip its teardown.
//
// A server SHUTDOWN reaches the phase in progress: before the handshake is
// done the connection just closes; during option haggling the option in
// progress is answered first; in transmission the requests in flight are
// answered and new ones get NBD_ESHUTDOWN (transmission.ts).

import { assign, sendTo, setup } from "xstate";
import type { OptionsOutput } from "../options/record.js";
import { declaredAction, declaredActor } from "./effects.js";
import { handshakeMachine, type HandshakeOutput } from "./handshake.js";
import { optionsMachine } from "./options.js";
import { transmissionMachine, type TransmissionOutput } from "./transmission.js";

export interface ConnectionMachineInput {
  /** Handed to the options machine. */
  options?: { maxOptions?: number; tls?: "off" | "on" | "require"; noStructuredReplies?: boolean; noMetaContexts?: boolean };
}

export interface ConnectionMachineContext {
  options: NonNullable<ConnectionMachineInput["options"]>;
  noZeroes: boolean;
  negotiated: OptionsOutput | null;
  finalize: boolean;
  shuttingDown: boolean;
  reason?: string;
}

export type ConnectionMachineEvent = { type: "SHUTDOWN" } | { type: "CLIENT_CLOSED" };

const because = (reason: string) => ({ type: "recordReason" as const, params: { reason } });
const outputOf = <T>(event: unknown) => (event as { output: T }).output;

export const connectionMachine = setup({
  types: {
    context: {} as ConnectionMachineContext,
    events: {} as ConnectionMachineEvent,
    input: {} as ConnectionMachineInput,
  },
  actors: {
    /** Every layer's preconnect (a refusal closes the socket before the greeting). */
    preconnect: declaredActor("preconnect"),
    handshake: handshakeMachine,
    options: optionsMachine,
    transmission: transmissionMachine,
    /** Finalize (unless the client vanished) and close the chosen export's contexts. */
    closeExport: declaredActor<{ finalize: boolean }>("closeExport"),
    /** End the socket once what was written has been sent (bounded in time). */
    flushSocket: declaredActor("flushSocket"),
  },
  actions: {
    /** Side effect: destroy the socket and forget the connection. */
    destroySocket: declaredAction("destroySocket"),
    /** Side effect: one line on the server's log saying why the connection ended (when it is worth saying). */
    logEnd: declaredAction("logEnd"),
    recordReason: assign({ reason: ({ context }, p: { reason: string }) => context.reason ?? p.reason }),
  },
  guards: {
    handshakeOk: ({ event }) => outputOf<HandshakeOutput>(event).ok,
    intoTransmission: ({ event }) => outputOf<OptionsOutput>(event).transmission,
  },
}).createMachine({
  id: "connection",
  description: "One client: preconnect, handshake, options, transmission, then its teardown.",
  context: ({ input }) => ({ options: input?.options ?? {}, noZeroes: false, negotiated: null, finalize: false, shuttingDown: false }),
  initial: "PRECONNECT",
  states: {
    PRECONNECT: {
      invoke: {
        id: "preconnect",
        src: "preconnect",
        onDone: "HANDSHAKE",
        onError: {
          target: "CLOSED",
          actions: assign({
            reason: ({ event }) => `refused before the handshake: ${(event.error as Error)?.message ?? String(event.error)}`,
          }),
        },
      },
      on: {
        SHUTDOWN: { target: "CLOSED", actions: because("the server is shutting down") },
        CLIENT_CLOSED: { target: "CLOSED", actions: because("client closed the connection") },
      },
    },
    HANDSHAKE: {
      invoke: {
        id: "handshake",
        src: "handshake",
        onDone: [
          { guard: "handshakeOk", target: "OPTIONS", actions: assign({ noZeroes: ({ event }) => outputOf<HandshakeOutput>(event).noZeroes }) },
          { target: "FLUSHING", actions: assign({ reason: ({ event }) => outputOf<HandshakeOutput>(event).reason }) },
        ],
      },
      on: {
        SHUTDOWN: { target: "CLOSED", actions: because("the server is shutting down") },
        CLIENT_CLOSED: { target: "CLOSED", actions: because("client closed the connection") },
      },
    },
    OPTIONS: {
      invoke: {
        id: "options",
        src: "options",
        input: ({ context }: { context: ConnectionMachineContext }) => context.options,
        onDone: [
          { guard: "intoTransmission", target: "TRANSMISSION", actions: assign({ negotiated: ({ event }) => outputOf<OptionsOutput>(event) }) },
          { target: "FLUSHING", actions: assign({ reason: ({ event }) => outputOf<OptionsOutput>(event).reason }) },
        ],
      },
      on: {
        SHUTDOWN: { actions: [assign({ shuttingDown: true }), sendTo("options", { type: "SHUTDOWN" })] },
        CLIENT_CLOSED: { actions: sendTo("options", { type: "CLIENT_CLOSED" }) },
      },
    },
    TRANSMISSION: {
      invoke: {
        id: "transmission",
        src: "transmission",
        input: ({ context }) => ({ shuttingDown: context.shuttingDown }),
        onDone: {
          target: "CLOSING",
          actions: assign({
            finalize: ({ event }) => outputOf<TransmissionOutput>(event).finalize,
            reason: ({ event }) => outputOf<TransmissionOutput>(event).reason,
          }),
        },
      },
      on: {
        SHUTDOWN: { actions: sendTo("transmission", { type: "SHUTDOWN" }) },
        CLIENT_CLOSED: { actions: sendTo("transmission", { type: "CLIENT_CLOSED" }) },
      },
    },
    CLOSING: {
      invoke: {
        id: "closeExport",
        src: "closeExport",
        input: ({ context }) => ({ finalize: context.finalize }),
        onDone: "FLUSHING",
        onError: "FLUSHING",
      },
    },
    FLUSHING: {
      description: "Everything written reaches the client before the socket closes.",
      invoke: { id: "flushSocket", src: "flushSocket", onDone: "CLOSED", onError: "CLOSED" },
      on: { CLIENT_CLOSED: "CLOSED" },
    },
    CLOSED: { type: "final", entry: ["logEnd", "destroySocket"] },
  },
});
