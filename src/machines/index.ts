// Every machine of nbdstate, for diagrams (scripts/diagrams.ts), docs and
// tests. Add new machines here; `npm run diagrams` regenerates diagrams/.
import type { AnyStateMachine } from "xstate";
import { backendLifecycleMachine } from "./backend-lifecycle.js";
import { contextMachine } from "./context.js";
import { sharedHandleMachine } from "./shared-handle.js";

export interface MachineEntry {
  /** File stem in diagrams/ (diagrams/ID.mmd, .dot, .svg). */
  id: string;
  machine: AnyStateMachine;
  /** One or two sentences for diagrams/README.md. */
  summary: string;
}

export const machines: MachineEntry[] = [
  {
    id: "backend-lifecycle",
    machine: backendLifecycleMachine,
    summary:
      "One layer (plugin or filter) from load to unload: configured, ready, running after fork; " +
      "UNLOAD from any live state runs cleanup and unload; a failing callback ends in failed.",
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
