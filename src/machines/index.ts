// Every machine of nbdstate, for diagrams (scripts/diagrams.ts), docs and
// tests. Add new machines here; `npm run diagrams` regenerates diagrams/.
import type { AnyStateMachine } from "xstate";
import { backendLifecycleMachine } from "./backend-lifecycle.js";
import { connectionMachine } from "./connection.js";
import { contextMachine } from "./context.js";
import { handshakeMachine } from "./handshake.js";
import { optionsMachine } from "./options.js";
import { serverMachine } from "./server.js";
import { sharedHandleMachine } from "./shared-handle.js";
import { transmissionMachine } from "./transmission.js";

export interface MachineEntry {
  /** File stem in diagrams/ (diagrams/ID.mmd, .dot, .svg). */
  id: string;
  machine: AnyStateMachine;
  /** One or two sentences for diagrams/README.md. */
  summary: string;
}

export const machines: MachineEntry[] = [
  {
    id: "server",
    machine: serverMachine,
    summary:
      "Listeners and connection actors: one connection actor spawned per client and stopped when it " +
      "finishes; SHUTDOWN stops accepting, tells every connection to drain, and stops when none is left.",
  },
  {
    id: "connection",
    machine: connectionMachine,
    summary:
      "One client from accept to close: preconnect, then the handshake, options and transmission " +
      "machines in turn, then its teardown (the export finalized and closed, what was written flushed).",
  },
  {
    id: "handshake",
    machine: handshakeMachine,
    summary:
      "Fixed newstyle greeting (NBDMAGIC, IHAVEOPT, FIXED_NEWSTYLE|NO_ZEROES) and the client flags; " +
      "unknown client flags close the connection, as the spec requires.",
  },
  {
    id: "options",
    machine: optionsMachine,
    summary:
      "Option haggling, assembled from one record per NBD_OPT_* (src/options): the option budget, " +
      "TLS-required refusals and malformed payloads checked first, then each option's own rules, " +
      "until NBD_OPT_GO/EXPORT_NAME enters transmission or the connection closes.",
  },
  {
    id: "transmission",
    machine: transmissionMachine,
    summary:
      "Phase events of the transmission phase only (requests are plain code): NBD_CMD_DISC, a " +
      "half-close or a fatal frame drain the requests in flight; a server shutdown answers new " +
      "requests ESHUTDOWN until the client is quiet.",
  },
  {
    id: "backend-lifecycle",
    machine: backendLifecycleMachine,
    summary:
      "One layer (plugin or filter) from load to unload: configured, ready, running after fork; " +
      "each step an invoked callback; a failing load, config, get_ready or after_fork ends in failed, " +
      "which still unloads.",
  },
  {
    id: "context",
    machine: contextMachine,
    summary:
      "One opened handle of one layer: open, prepare, serve, finalize, close, with a failure edge " +
      "from every step (a failed open has nothing to close; a failed prepare still closes).",
  },
  {
    id: "shared-handle",
    machine: sharedHandleMachine,
    summary:
      "The refcounted context a filter shares among all connections: opened on first acquire no " +
      "earlier than afterFork, drained of in-flight requests before it closes (on last release or " +
      "at unload), and refusing acquirers after unload.",
  },
];
