// What the main thread and a transmission worker say to each other.

import type { TransmissionEvent } from "../machines/transmission.js";
import type { ExportInfo } from "../options/export-info.js";

/** workerData: how the worker builds its twin of the plugin. */
export interface WorkerInit {
  /** The plugin as the command line named it (name or path). */
  plugin: string;
  /** Its parameters, in order, as the main thread's plugin got them. */
  params: [string, string][];
  /** The plugin's PluginThreads.share() value. */
  state: unknown;
}

/** Worker to main, on the worker's own port. */
export type WorkerReport = { type: "ready" } | { type: "failed"; message: string } | { type: "error"; message: string };

/** Main to worker: one connection, with its own port. */
export interface ConnectionHandOff {
  type: "connection";
  id: string;
  fd: number;
  /** Bytes already read past NBD_OPT_GO. */
  leftover: Uint8Array;
  ended: boolean;
  exportName: string;
  readonly: boolean;
  info: ExportInfo;
  structuredReplies: boolean;
  extendedHeaders: boolean;
  metaContexts: { id: number; name: string }[];
  maxInFlight: number;
  maxInFlightBytes: number;
  /** Float64Array: inFlight, bytesRead, bytesWritten, requests, errors (for the status page). */
  counters: SharedArrayBuffer;
}

/** Main to worker on a connection's port (awaits carry a number the reply repeats). */
export type LoopCommand =
  | { op: "start" }
  | { op: "refuse" }
  | { op: "stopReading" }
  | { op: "awaitReplies"; n: number }
  | { op: "awaitQuiet"; n: number }
  | { op: "flushAndEnd"; n: number; timeoutMs: number }
  | { op: "destroy" };

/** Worker to main on a connection's port. */
export type LoopReport =
  | { type: "event"; ev: TransmissionEvent }
  | { type: "failed"; command: string; message: string }
  | { type: "log"; msg: string }
  | { type: "done"; n: number }
  | { type: "closed" };

/** Slots of the counters array. */
export const COUNTER = { inFlight: 0, bytesRead: 1, bytesWritten: 2, requests: 3, errors: 4 } as const;
export const COUNTERS = 5;
