// Fixed newstyle handshake (doc/proto.md, "Newstyle negotiation"):
//
//   S: 64 bits NBDMAGIC, 64 bits IHAVEOPT, 16 bits handshake flags
//   C: 32 bits client flags
//
// The server advertises NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES.
// "If the client sets a flag the server does not understand, the server
// MUST close the connection" (client flags section) - guard unknownClientFlags.

import { assign, setup } from "xstate";
import { NBD_FLAG_C_FIXED_NEWSTYLE, NBD_FLAG_C_NO_ZEROES } from "../protocol/constants.js";

export const KNOWN_CLIENT_FLAGS = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES;

export interface HandshakeContext {
  clientFlags: number;
  noZeroes: boolean;
  reason?: string;
}

export type HandshakeEvent =
  | { type: "CLIENT_FLAGS"; flags: number }
  | { type: "TIMEOUT" }
  | { type: "CLIENT_CLOSED" };

export interface HandshakeOutput {
  ok: boolean;
  noZeroes: boolean;
  reason?: string;
}

export const handshakeMachine = setup({
  types: {
    context: {} as HandshakeContext,
    events: {} as HandshakeEvent,
    output: {} as HandshakeOutput,
  },
  actions: {
    /** Side effect: write NBDMAGIC, IHAVEOPT and the handshake flags. */
    sendGreeting: () => {},
    /** Side effect: close the socket. */
    closeConnection: () => {},
    recordFlags: assign({
      clientFlags: ({ event }) => (event.type === "CLIENT_FLAGS" ? event.flags : 0),
      noZeroes: ({ event }) => event.type === "CLIENT_FLAGS" && (event.flags & NBD_FLAG_C_NO_ZEROES) !== 0,
    }),
    recordReason: assign({ reason: (_, p: { reason: string }) => p.reason }),
  },
  guards: {
    unknownClientFlags: ({ event }) => event.type === "CLIENT_FLAGS" && (event.flags & ~KNOWN_CLIENT_FLAGS) !== 0,
  },
}).createMachine({
  id: "handshake",
  description: "Greeting and client flags of the fixed newstyle handshake.",
  context: { clientFlags: 0, noZeroes: false },
  initial: "SEND_GREETING",
  states: {
    SEND_GREETING: {
      entry: "sendGreeting",
      always: "AWAIT_CLIENT_FLAGS",
    },
    AWAIT_CLIENT_FLAGS: {
      on: {
        CLIENT_FLAGS: [
          {
            guard: "unknownClientFlags",
            target: "REJECTED",
            actions: [{ type: "recordReason", params: { reason: "client sent unknown flags" } }, "closeConnection"],
          },
          { target: "NEGOTIATING", actions: "recordFlags" },
        ],
        TIMEOUT: {
          target: "REJECTED",
          actions: [{ type: "recordReason", params: { reason: "handshake timed out" } }, "closeConnection"],
        },
        CLIENT_CLOSED: { target: "REJECTED", actions: { type: "recordReason", params: { reason: "client closed the connection" } } },
      },
    },
    NEGOTIATING: { type: "final" },
    REJECTED: { type: "final" },
  },
  output: ({ context }) => ({
    ok: context.reason === undefined,
    noZeroes: context.noZeroes,
    reason: context.reason,
  }),
});
