// The transmission phase of one connection. Requests are plain code (the
// hot path: parse 28 bytes in place, one call down the stack, one write);
// the transmission machine only sees phase events (DISC, shutdown, fatal
// error, drained, client gone).

import { createActor, type Actor, type InspectionEvent } from "xstate";
import type { Duplex } from "node:stream";
import { transmissionMachine } from "../machines/transmission.js";
import * as C from "../protocol/constants.js";
import { readU64 } from "../protocol/wire.js";
import { errorMessage, toNbdErrno } from "../backend/errors.js";
import { clipExtents } from "../backend/extents.js";
import { FLAG_REQ_ONE, type Context } from "../backend/types.js";
import type { ByteQueue } from "./byte-queue.js";
import type { Negotiated } from "./negotiation.js";
import {
  blockStatusChunk, DATA_CHUNK_HEADER, errorChunk, SIMPLE_HEADER, simpleReply, writeChunkHeader, writeSimpleHeader,
} from "./replies.js";
import { replyBuffers } from "./buffer-pool.js";
import { checkRequest, stackFlags } from "./requests.js";

export interface TransmissionOptions {
  /** Requests in flight before reading pauses (-t). */
  maxInFlight: number;
  /** Payload bytes in flight before reading pauses. */
  maxInFlightBytes: number;
  inspect?: (ev: InspectionEvent) => void;
  log?: (msg: string) => void;
  /**
   * Close the context (finalize says whether the client left cleanly);
   * the socket is ended once the returned promise settles.
   */
  onClosed: (finalize: boolean) => Promise<void> | void;
}

const HEADER = 28;
/** Replies queued in the socket, not yet taken by the client, before reading pauses. */
const MAX_QUEUED_REPLY_BYTES = 8 * 1024 * 1024;

export class Transmission {
  inFlight = 0;
  private inFlightBytes = 0;
  private paused = false;
  private waitingDrain = false;
  private stopped = false;
  /** Bytes of an oversized write payload still to throw away. */
  private discard = 0;
  private corked = false;
  private clientGone = false;
  readonly bytesRead = { value: 0 };
  readonly bytesWritten = { value: 0 };
  private readonly machine: Actor<typeof transmissionMachine>;
  private readonly ctx: Context;
  private drainedWaiters: (() => void)[] = [];

  constructor(
    private readonly socket: Duplex,
    private readonly queue: ByteQueue,
    private readonly neg: Negotiated,
    private readonly o: TransmissionOptions,
  ) {
    this.ctx = neg.opened.ctx;
    this.machine = createActor(
      transmissionMachine.provide({
        actions: {
          stopReading: () => {
            this.stopped = true;
          },
          checkDrained: () => this.checkDrained(),
          closeConnection: () => void this.close(),
        },
      }),
      { inspect: o.inspect },
    );
    this.machine.subscribe({ error: (e) => o.log?.(`transmission: ${String(e)}`) });
    this.machine.start();
  }

  get phase(): string {
    return String(this.machine.getSnapshot().value);
  }

  /** Phase events from outside: server shutdown, socket closed by the client. */
  shutdown(): void {
    this.machine.send({ type: "SHUTDOWN" });
  }

  /** The client half-closed: drain what is in flight, then close. */
  inputEnded(): void {
    this.stopped = true;
    this.machine.send({ type: "FATAL", reason: "client closed its sending side" });
  }

  clientClosed(): void {
    this.clientGone = true;
    this.stopped = true;
    // The socket's "close" also follows our own end after CLOSED: nothing to tell then.
    if (this.machine.getSnapshot().status === "active") this.machine.send({ type: "CLIENT_CLOSED" });
  }

  private fatal(reason: string): void {
    this.o.log?.(`transmission: ${reason}`);
    this.machine.send({ type: "FATAL", reason });
  }

  private checkDrained(): void {
    // Looked at once the current transition is over: as DRAINING's entry
    // action this runs while the snapshot still says SERVING.
    if (this.inFlight !== 0) return;
    queueMicrotask(() => {
      if (this.inFlight === 0 && this.machine.getSnapshot().value === "DRAINING") this.machine.send({ type: "REPLIES_DRAINED" });
    });
  }

  private async close(): Promise<void> {
    this.stopped = true;
    // A context never sees a close while its requests are still running.
    if (this.inFlight > 0) await new Promise<void>((r) => this.drainedWaiters.push(r));
    // As nbdkit: a client that leaves cleanly sees the connection end only
    // after the context is finalized (delay-close, log's Disconnect line).
    const clean = !this.clientGone;
    await this.o.onClosed(clean);
    if (clean) this.socket.end();
  }

  /** Parse and dispatch every complete request in the queue. */
  pump(): void {
    const q = this.queue;
    while (!this.paused && !this.stopped) {
      if (this.discard > 0) {
        const k = Math.min(this.discard, q.length);
        q.drop(k);
        this.discard -= k;
        if (this.discard > 0) return;
      }
      if (q.length < HEADER) return;
      if (q.u32(0) !== C.NBD_REQUEST_MAGIC) {
        this.fatal("bad request magic");
        return;
      }
      const hdr = q.peek(0, HEADER);
      const flags = hdr.readUInt16BE(4);
      const type = hdr.readUInt16BE(6);
      const offset = readU64(hdr, 16);
      const count = hdr.readUInt32BE(24);
      let payload: Buffer | null = null;
      let pooled = false;
      let cookie = hdr.subarray(8, 16);
      if (type === C.NBD_CMD_WRITE) {
        if (count > C.MAX_REQUEST_SIZE) {
          // Too large to hold: answer EINVAL and skip the payload as it streams in.
          cookie = Buffer.from(cookie);
          q.drop(HEADER);
          this.discard = count;
          this.bytesRead.value += HEADER + count;
          this.send(simpleReply(C.NBD_EINVAL, cookie));
          continue;
        }
        if (q.length < HEADER + count) return;
        // A view when header and payload sit in one socket chunk, else one
        // copy into a warm pooled buffer, given back once the write is done.
        pooled = !q.contiguous(HEADER + count);
        const whole = q.peek(0, HEADER + count, pooled ? (n) => replyBuffers.get(n) : undefined);
        cookie = whole.subarray(8, 16);
        payload = whole.subarray(HEADER);
        q.drop(HEADER + count);
      } else {
        q.drop(HEADER);
      }
      this.bytesRead.value += HEADER + (payload ? count : 0);
      if (type === C.NBD_CMD_DISC) {
        this.machine.send({ type: "NBD_CMD_DISC" });
        return;
      }
      this.dispatch(type, flags, cookie, offset, count, payload, pooled ? payload!.buffer : null);
      if (this.busy()) {
        this.paused = true;
        this.socket.pause();
        this.awaitDrain();
      }
    }
  }

  private dispatch(
    type: number, flags: number, cookie: Buffer, offset: number, count: number, payload: Buffer | null,
    pooledPayload: ArrayBufferLike | null,
  ): void {
    // The cookie may live in the pooled payload buffer: give it back only after the reply copied it.
    const release = pooledPayload ? () => replyBuffers.put(Buffer.from(pooledPayload as ArrayBuffer)) : null;
    const err = checkRequest(this.neg, type, flags, offset, count);
    if (err !== 0) {
      this.sendError(type, err, "request rejected", cookie);
      release?.();
      return;
    }
    const f = stackFlags(type, flags);
    const ctx = this.ctx;
    const bytes = type === C.NBD_CMD_READ || type === C.NBD_CMD_WRITE ? count : 0;
    this.inFlight++;
    this.inFlightBytes += bytes;
    let p: Promise<unknown>;
    switch (type) {
      case C.NBD_CMD_READ:
        p = this.read(cookie, offset, count);
        break;
      case C.NBD_CMD_WRITE:
        p = ctx.pwrite(payload!, offset, f).then(() => this.send(simpleReply(0, cookie)));
        break;
      case C.NBD_CMD_FLUSH:
        p = ctx.flush(f).then(() => this.send(simpleReply(0, cookie)));
        break;
      case C.NBD_CMD_TRIM:
        p = ctx.trim(count, offset, f).then(() => this.send(simpleReply(0, cookie)));
        break;
      case C.NBD_CMD_WRITE_ZEROES:
        p = ctx.zero(count, offset, f).then(() => this.send(simpleReply(0, cookie)));
        break;
      case C.NBD_CMD_CACHE:
        p = ctx.cache(count, offset, f).then(() => this.send(simpleReply(0, cookie)));
        break;
      default: // NBD_CMD_BLOCK_STATUS (checkRequest refused anything else)
        p = ctx.extents(count, offset, f).then((e) => this.send(blockStatusChunk(this.neg.baseAllocationId, clipExtents(e, count, (f & FLAG_REQ_ONE) !== 0), cookie)));
    }
    p.then(
      () => {
        release?.();
        this.done(bytes);
      },
      (e: unknown) => {
        this.o.log?.(`${C.COMMAND_NAMES[type]}: ${errorMessage(e)}`);
        this.sendError(type, toNbdErrno(e), errorMessage(e), cookie);
        release?.();
        this.done(bytes);
      },
    );
  }

  private async read(cookie: Buffer, offset: number, count: number): Promise<void> {
    // Header and data in one buffer: one write per reply.
    const head = this.neg.structuredReplies ? DATA_CHUNK_HEADER : SIMPLE_HEADER;
    const b = replyBuffers.get(head + count);
    await this.ctx.pread(b.subarray(head), offset, 0);
    if (head === DATA_CHUNK_HEADER) {
      writeChunkHeader(b, C.NBD_REPLY_FLAG_DONE, C.NBD_REPLY_TYPE_OFFSET_DATA, cookie, 8 + count);
      b.writeUInt32BE(Math.floor(offset / 0x1_0000_0000) >>> 0, 20);
      b.writeUInt32BE(offset >>> 0, 24);
    } else {
      writeSimpleHeader(b, 0, cookie);
    }
    this.send(b, () => replyBuffers.put(b));
  }

  private sendError(type: number, errno: number, message: string, cookie: Buffer): void {
    // Structured replies: an error chunk for the commands whose replies are structured.
    if (this.neg.structuredReplies && (type === C.NBD_CMD_READ || type === C.NBD_CMD_BLOCK_STATUS)) {
      this.send(errorChunk(errno, message, cookie));
    } else {
      this.send(simpleReply(errno, cookie));
    }
  }

  /** Queue a reply; `written` runs once the socket no longer needs b. */
  private send(b: Buffer, written?: () => void): void {
    if (this.clientGone) return;
    this.bytesWritten.value += b.length;
    // Replies finishing in the same tick leave in one writev.
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    this.socket.write(b, written);
  }

  private done(bytes: number): void {
    this.inFlight--;
    this.inFlightBytes -= bytes;
    if (this.inFlight === 0) {
      for (const w of this.drainedWaiters.splice(0)) w();
      if (this.phase === "DRAINING") this.machine.send({ type: "REPLIES_DRAINED" });
    }
    this.maybeResume();
  }

  /**
   * Reading pauses while too many requests are in flight, or while replies
   * the client has not read yet pile up in the socket: a client that does
   * not read cannot make the server queue replies without bound.
   */
  private busy(): boolean {
    return (
      this.inFlight >= this.o.maxInFlight ||
      this.inFlightBytes >= this.o.maxInFlightBytes ||
      this.socket.writableLength >= MAX_QUEUED_REPLY_BYTES
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
    if (!this.paused || this.stopped) return;
    if (this.busy()) {
      this.awaitDrain();
      return;
    }
    this.paused = false;
    this.socket.resume();
    this.pump();
  }
}
