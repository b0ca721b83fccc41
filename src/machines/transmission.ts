// Transmission phase, phase events only: individual requests are plain
// code enabled by SERVING (one XState event costs 4-8 us; a request must
// cost less than that in total).
//
// "The server MUST NOT ... close the connection while there are
// outstanding requests" after NBD_CMD_DISC: it "MUST handle all
// outstanding requests" first (doc/proto.md, NBD_CMD_DISC) - DRAINING.

import { setup } from "xstate";

export type TransmissionEvent =
  | { type: "NBD_CMD_DISC" }
  | { type: "FATAL"; reason: string }
  | { type: "SHUTDOWN" }
  | { type: "REPLIES_DRAINED" }
  | { type: "CLIENT_CLOSED" };

export const transmissionMachine = setup({
  types: {
    events: {} as TransmissionEvent,
  },
  actions: {
    /** Side effect: stop reading requests; replies already owed still go out. */
    stopReading: () => {},
    /** Side effect: if nothing is in flight now, report REPLIES_DRAINED. */
    checkDrained: () => {},
    /** Side effect: finalize and close the export's contexts, close the socket. */
    closeConnection: () => {},
  },
}).createMachine({
  id: "transmission",
  description: "Serving requests until the client disconnects or the server shuts down.",
  initial: "SERVING",
  states: {
    SERVING: {
      on: {
        NBD_CMD_DISC: "DRAINING",
        SHUTDOWN: "DRAINING",
        FATAL: "DRAINING",
        CLIENT_CLOSED: "CLOSED",
      },
    },
    DRAINING: {
      entry: ["stopReading", "checkDrained"],
      on: {
        REPLIES_DRAINED: "CLOSED",
        CLIENT_CLOSED: "CLOSED",
      },
    },
    CLOSED: { type: "final", entry: "closeConnection" },
  },
});
