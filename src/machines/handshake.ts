// Fixed newstyle handshake (doc/proto.md, "Newstyle negotiation"):
//
//   S: 64 bits NBDMAGIC, 64 bits IHAVEOPT, 16 bits handshake flags
//   C: 32 bits client flags
//
// The server advertises NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES.
// "If the client sets a flag the server does not understand, the server
// MUST close the connection" (client flags section): guard
// unknownClientFlags. Reading the flags is an invoked effect; the
// handshake timeout is the machine's own delay (HANDSHAKE_TIMEOUT).

import { assign, setup } from "xstate";
import { NBD_FLAG_C_FIXED_NEWSTYLE, NBD_FLAG_C_NO_ZEROES } from "../protocol/constants.js";
import { declaredAction, declaredActor } from "./effects.js";

export const KNOWN_CLIENT_FLAGS = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES;

export interface HandshakeContext {
  clientFlags: number;
  noZeroes: boolean;
  reason?: string;
}

export interface HandshakeOutput {
  ok: boolean;
  noZeroes: boolean;
  reason?: string;
}

/** Default HANDSHAKE_TIMEOUT (ms); runners provide their own with machine.provide({ delays }). */
export const HANDSHAKE_TIMEOUT_MS = 10_000;

const flagsOf = (event: unknown) => (event as { output?: number }).output ?? 0;

export const handshakeMachine = setup({
  types: {
    context: {} as HandshakeContext,
    output: {} as HandshakeOutput,
  },
  actions: {
    /** Side effect: write NBDMAGIC, IHAVEOPT and the handshake flags. */
    sendGreeting: declaredAction("sendGreeting"),
    recordFlags: assign({
      clientFlags: ({ event }) => flagsOf(event),
      noZeroes: ({ event }) => (flagsOf(event) & NBD_FLAG_C_NO_ZEROES) !== 0,
    }),
    recordReason: assign({ reason: (_, p: { reason: string }) => p.reason }),
  },
  actors: {
    /** Read the client's 32-bit flags (rejects when the client goes away first). */
    readClientFlags: declaredActor<void, number>("readClientFlags"),
  },
  guards: {
    unknownClientFlags: ({ event }) => (flagsOf(event) & ~KNOWN_CLIENT_FLAGS) !== 0,
  },
  delays: {
    HANDSHAKE_TIMEOUT: HANDSHAKE_TIMEOUT_MS,
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
      invoke: {
        id: "readClientFlags",
        src: "readClientFlags",
        onDone: [
          {
            guard: "unknownClientFlags",
            target: "REJECTED",
            actions: [{ type: "recordReason", params: { reason: "client sent unknown flags" } }],
          },
          { target: "NEGOTIATING", actions: "recordFlags" },
        ],
        onError: { target: "REJECTED", actions: { type: "recordReason", params: { reason: "client closed the connection" } } },
      },
      after: {
        HANDSHAKE_TIMEOUT: {
          target: "REJECTED",
          actions: [{ type: "recordReason", params: { reason: "handshake timed out" } }],
        },
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
