// Back-pressure of one connection's transmission: the requests and payload
// bytes in flight, and the reply bytes the client has not taken. Reading
// pauses while any is over its limit (a client that does not read cannot
// make the server hold more than a few MiB for it) and resumes as requests
// complete, replies leave the queue or the socket drains.

import type { Duplex } from "node:stream";
import { objectArray } from "./object-array.js";
import type { ReplyQueue } from "./reply-queue.js";

/** Replies queued and not yet taken by the client, before reading pauses. */
export const MAX_QUEUED_REPLY_BYTES = 1024 * 1024;

export interface FlowLimits {
  /** Requests in flight before reading pauses (-t). */
  maxInFlight: number;
  /** Payload bytes in flight before reading pauses. */
  maxInFlightBytes: number;
}

export class FlowControl {
  /** Requests sent down the stack and not yet answered. */
  inFlight = 0;
  private inFlightBytes = 0;
  /** Reading is paused until the connection is no longer busy. */
  paused = false;
  private waitingDrain = false;
  private readonly idleWaiters: (() => void)[] = objectArray();

  constructor(
    private readonly socket: Duplex,
    private readonly replies: ReplyQueue,
    private readonly limits: FlowLimits,
    /** Whether the loop still reads (a paused loop that stopped reading is not resumed). */
    private readonly reading: () => boolean,
    /** Reading resumed: parse what is queued. */
    private readonly pump: () => void,
  ) {
    replies.onFlush = () => {
      // Replies just moved from the queue to the socket: reading may resume, or must wait for 'drain'.
      if (this.paused) this.maybeResume();
    };
  }

  /** A request went down the stack with `bytes` of payload or data. */
  started(bytes: number): void {
    this.inFlight++;
    this.inFlightBytes += bytes;
  }

  /** A request's reply is queued. */
  done(bytes: number): void {
    this.inFlight--;
    this.inFlightBytes -= bytes;
    if (this.inFlight === 0 && this.idleWaiters.length) for (const w of this.idleWaiters.splice(0)) w();
    this.maybeResume();
  }

  /** Resolves once every request in flight has its reply queued. */
  idle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  /** Reading pauses while busy(): resumed by the completions, the flushes or the socket's drain. */
  pauseIfBusy(): void {
    if (!this.busy()) return;
    this.paused = true;
    this.socket.pause();
    this.awaitDrain();
  }

  /** Too many requests or payload bytes in flight, or too many reply bytes the client has not taken. */
  private busy(): boolean {
    return (
      this.inFlight >= this.limits.maxInFlight ||
      this.inFlightBytes >= this.limits.maxInFlightBytes ||
      this.socket.writableLength + this.replies.pendingBytes >= MAX_QUEUED_REPLY_BYTES
    );
  }

  private awaitDrain(): void {
    if (this.waitingDrain || this.socket.writableLength < MAX_QUEUED_REPLY_BYTES) return;
    this.waitingDrain = true;
    this.socket.once("drain", () => {
      this.waitingDrain = false;
      this.maybeResume();
    });
  }

  private maybeResume(): void {
    if (!this.paused || !this.reading()) return;
    if (this.busy()) {
      this.awaitDrain();
      return;
    }
    this.paused = false;
    this.socket.resume();
    this.pump();
  }
}
