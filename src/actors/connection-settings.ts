// What a connection actor is given (settings from the command line, its
// socket) and what it shows the status page, apart from the actor itself
// (connection.ts) so the status code can name them without importing it.

import type { InspectionEvent } from "xstate";
import type { Duplex } from "node:stream";
import type { OptionRecord, TlsMode } from "../options/record.js";
import * as C from "../protocol/constants.js";
import type { TlsServer } from "./tls.js";
import type { TransmissionThreads } from "./transmission-loop.js";

export interface ConnectionSettings {
  readonly: boolean;
  tls: TlsMode;
  /** Certificates or PSK keys, loaded at startup; required unless tls is "off". */
  tlsServer?: TlsServer;
  maxInFlight: number;
  maxInFlightBytes: number;
  /** Worker threads a plain-socket connection's transmission may move to (src/threads). */
  workers?: TransmissionThreads;
  /** Options one client may send before it is cut off (default MAX_OPTIONS). */
  maxOptions?: number;
  handshakeTimeoutMs?: number;
  optionTimeoutMs?: number;
  /** How long a shutdown waits for a client in transmission to finish (default 5 s). */
  shutdownGraceMs?: number;
  /** How long the last replies may take to leave before the socket is cut. */
  flushTimeoutMs?: number;
  noStructuredReplies?: boolean;
  noMetaContexts?: boolean;
  maskHandshake?: number;
  /** Option records (tests add their own). */
  optionRecords?: readonly OptionRecord[];
  inspect?: (ev: InspectionEvent) => void;
  /** Debug lines (-v). */
  log: (msg: string) => void;
  /** Lines always shown: failed opens, failed requests (rate-limited). */
  error: (msg: string) => void;
}

export interface ConnectionInput {
  id: string;
  socket: Duplex;
  remote: string;
}

/** What the status page shows of a live connection. */
export interface ConnectionStatus {
  id: string;
  remote: string;
  /** The connection machine's state, and the phase machine's inside it ("TRANSMISSION/SERVING"). */
  phase: string;
  exportName?: string;
  inFlight: number;
  bytesRead: number;
  bytesWritten: number;
  requests: number;
  errors: number;
  acceptedAt: number;
  /** The machine of the current phase (handshake, options, transmission) and its state. */
  machine?: string;
  state?: string;
}

/** Payload bytes in flight per connection before reading pauses. */
export const DEFAULT_MAX_IN_FLIGHT_BYTES = C.MAX_REQUEST_SIZE;
