// What the connection actor needs of a transmission phase's data loop:
// the loop itself (transmission.ts) or its stand-in for a connection
// served by a worker thread (src/threads). Here so that the connection
// actor depends on neither.

import type net from "node:net";
import type { Opened } from "../backend/chain.js";
import type { TransmissionEvent } from "../machines/transmission.js";
import type { ExportInfo } from "../options/export-info.js";
import type { ByteQueue } from "./byte-queue.js";

/** What negotiation hands to transmission. */
export interface Negotiated {
  opened: Opened;
  info: ExportInfo;
  structuredReplies: boolean;
  extendedHeaders: boolean;
  /** The meta contexts the client selected, by id. */
  metaContexts: { id: number; name: string }[];
}

/** What the connection gives the data loop (transmission.ts). */
export interface TransmissionOptions {
  /** Requests in flight before reading pauses (-t). */
  maxInFlight: number;
  /** Payload bytes in flight before reading pauses. */
  maxInFlightBytes: number;
  /** Debug lines. */
  log: (msg: string) => void;
  /** A request failed (the connection rate-limits these lines). */
  failed: (command: string, err: unknown) => void;
  /** Phase events for the transmission machine. */
  emit: (ev: TransmissionEvent) => void;
}

export interface TransmissionLoop {
  readonly inFlight: number;
  readonly requests: number;
  readonly errors: number;
  readonly bytesRead: { readonly value: number };
  readonly bytesWritten: { readonly value: number };
  start(): void;
  refuse(): void;
  stopReading(): void;
  awaitReplies(): Promise<void>;
  awaitQuiet(): Promise<void>;
  data(): void;
  inputEnded(): void;
  finish(): void;
  clientClosed(): void;
}

/** A loop running in another thread: it owns the socket from now on. */
export interface RemoteLoop extends TransmissionLoop {
  /** Write what is owed, end the socket, wait until it is done (or the timeout). */
  flushAndEnd(timeoutMs: number): Promise<void>;
  /** Cut the connection there. */
  destroy(): void;
}

/** A connection at the start of its transmission phase, as handed to another thread. */
export interface HandOff {
  id: string;
  /** The plain socket (no TLS), paused by the hand-off. */
  socket: net.Socket;
  /** Bytes read and not yet parsed (requests pipelined behind NBD_OPT_GO). */
  queue: ByteQueue;
  exportName: string;
  readonly: boolean;
  info: ExportInfo;
  structuredReplies: boolean;
  extendedHeaders: boolean;
  metaContexts: { id: number; name: string }[];
  maxInFlight: number;
  maxInFlightBytes: number;
  /** The loop's phase events, for the transmission machine. */
  emit(ev: TransmissionEvent): void;
  failed(command: string, message: string): void;
  log(msg: string): void;
  /** The socket closed (the client went, or it was cut). */
  closed(): void;
}

/** Worker threads a connection's transmission phase can move to. */
export interface TransmissionThreads {
  /** Take the connection to a worker (its loop's stand-in), or null: it stays on this thread. */
  handOff(h: HandOff): RemoteLoop | null;
}
