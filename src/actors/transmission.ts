// The data loop of the transmission phase: requests are plain code (the
// hot path: read a header in place, one call down the stack, the reply
// written in place and queued). The transmission machine
// (src/machines/transmission.ts) only sees phase events: NBD_CMD_DISC, a
// fatal frame, the client's half-close; it says when reading stops, when
// new requests are refused, and waits here for the replies owed.
//
// Replies of every request finished in one turn of the event loop leave in
// one writev (reply-queue.ts); reading pauses while too much is in flight
// or not taken by the client (flow-control.ts); large WRITEs are read
// straight into the storage's pages (direct-write.ts) or into a buffer of
// their own.

import type { Duplex } from "node:stream";
import { errorMessage, wireErrno } from "../backend/errors.js";
import type { Context, DirectMemory } from "../backend/types.js";
import * as C from "../protocol/constants.js";
import * as T from "../protocol/transmission.js";
import type { ByteQueue } from "./byte-queue.js";
import { replyBuffers } from "./buffer-pool.js";
import { ReplyQueue } from "./reply-queue.js";
import { ReplyWriter } from "./reply-writer.js";
import { fdOf, type SocketReader } from "./socket-reader.js";
import { blockStatusPayload, callStack, checkRequest, stackFlags, type RequestLimits } from "./requests.js";
import { DirectWrite } from "./direct-write.js";
import { FlowControl } from "./flow-control.js";
import type { Negotiated, TransmissionOptions } from "./transmission-loop.js";

/** WRITE payloads this large are read straight into their buffer (socket-reader.ts). */
const DIRECT_MIN = 16 * 1024;
/** After a shutdown, the client counts as quiet once it sent nothing for this long. */
const QUIET_MS = 100;

export class Transmission {
  /** Requests down the stack and not yet answered (the status page's figure). */
  get inFlight(): number {
    return this.flow.inFlight;
  }
  requests = 0;
  errors = 0;
  readonly bytesRead = { value: 0 };
  readonly bytesWritten = { value: 0 };
  private reading = false;
  private refusing = false;
  /** Payload bytes of a refused request still to throw away as they arrive. */
  private discard = 0;
  private ended = false;
  private endReported = false;
  private readonly hdr = T.newRequestHeader();
  private readonly scratch = Buffer.allocUnsafe(T.EXTENDED_REQUEST_SIZE);
  private readonly scratchFor = (): Buffer => this.scratch;
  private readonly ctx: Context;
  /** The storage's memory, when the stack offers it (reads and large writes skip the stack's calls). */
  private readonly mem: DirectMemory | null;
  /** Large WRITEs read straight into the storage's pages (a plain socket and DirectMemory.target). */
  private readonly direct: DirectWrite | null;
  private readonly ext: boolean;
  private readonly headerSize: number;
  private readonly limits: RequestLimits;
  private readonly replies: ReplyQueue;
  /** Every reply's bytes: headers, chunks, data. */
  private readonly out: ReplyWriter;
  /** In flight and back-pressure: when reading pauses and resumes. */
  private readonly flow: FlowControl;
  private lastData = Date.now();
  /** Payload length of the last WRITE read in place (0: the last was small). */
  private lastWrite = 0;
  /** The buffer the next read was guessed into (SocketReader.guessNext). */
  private guessed: Buffer | null = null;

  constructor(
    socket: Duplex,
    private readonly queue: ByteQueue,
    private readonly neg: Negotiated,
    private readonly o: TransmissionOptions,
    /** Set when the socket reads through a SocketReader (plain sockets): large payloads are read in place. */
    private readonly reader?: SocketReader,
  ) {
    this.ctx = neg.opened.ctx;
    this.mem = this.ctx.memory ?? null;
    this.ext = neg.extendedHeaders;
    this.headerSize = T.requestSize(this.ext);
    this.limits = { info: neg.info, structuredReplies: neg.structuredReplies, extendedHeaders: neg.extendedHeaders, contexts: neg.metaContexts.length };
    // Replies go to the fd itself when the socket reads through a SocketReader (a plain socket).
    this.replies = new ReplyQueue(socket, reader ? fdOf(socket) : -1);
    this.flow = new FlowControl(socket, this.replies, o, () => this.reading, () => this.pump());
    this.out = new ReplyWriter(this.replies, this.ctx, neg, this.bytesWritten);
    const mem = this.mem;
    this.direct = reader && mem?.target
      ? new DirectWrite(mem as DirectMemory & Required<Pick<DirectMemory, "target">>, reader, this.headerSize, () => {
          if (this.directDone()) this.pump();
        })
      : null;
    reader?.recycle();
  }

  // ---- what the machine asks for

  start(): void {
    this.reading = true;
    this.pump();
  }

  /** Shutdown: requests read from now on get NBD_ESHUTDOWN without reaching the stack. */
  refuse(): void {
    this.refusing = true;
  }

  stopReading(): void {
    this.reading = false;
  }

  /** Resolves once every request in flight has its reply queued. */
  awaitReplies(): Promise<void> {
    return this.flow.idle();
  }

  /** Resolves once nothing is in flight or half-received and the client has been quiet for a moment. */
  awaitQuiet(): Promise<void> {
    return new Promise((resolve) => {
      const check = () => {
        if (this.out.gone) return resolve();
        const quietFor = Date.now() - this.lastData;
        if (this.flow.inFlight === 0 && this.queue.length === 0 && this.discard === 0 && quietFor >= QUIET_MS) return resolve();
        setTimeout(check, Math.max(10, QUIET_MS - quietFor));
      };
      check();
    });
  }

  // ---- what the socket tells

  /** More bytes arrived (already in the queue). */
  data(): void {
    this.lastData = Date.now();
    if (this.reading) this.pump();
  }

  /**
   * The client half-closed: every request it sent is still served (reading
   * may be paused behind those in flight); once the queue holds no complete
   * request the phase ends.
   */
  inputEnded(): void {
    this.ended = true;
    this.pump();
  }

  /** Called where pump() runs out of bytes: after a half-close, that is the end of the input. */
  private outOfInput(): void {
    if (!this.ended || this.endReported || !this.reading) return;
    this.endReported = true;
    this.o.emit({ type: "INPUT_ENDED" });
  }

  /** The phase is over: what is queued is written now (the socket is ended next). */
  finish(): void {
    this.reading = false;
    this.replies.flush();
  }

  /** The socket is gone: nothing more is written. */
  clientClosed(): void {
    // A payload that was arriving into pages never will: they are let go.
    this.direct?.abandon();
    this.out.gone = true;
    this.reading = false;
    this.replies.close();
  }

  // ---- requests

  /** Parse and dispatch every complete request in the queue. */
  pump(): void {
    this.pumpQueue();
    if (this.queue.length === 0) this.reader?.consumed();
    // A stream of large WRITEs (a copy): the next read goes into a buffer
    // that holds the next one whole, header and payload.
    const r = this.reader;
    if (r && this.lastWrite >= DIRECT_MIN && this.queue.length === 0 && this.reading && !this.flow.paused && !r.reading && !r.guessing) {
      this.guessed = replyBuffers.get(this.headerSize + this.lastWrite);
      r.guessNext(this.guessed);
    }
  }

  private pumpQueue(): void {
    const q = this.queue;
    const H = this.headerSize;
    const hdr = this.hdr;
    const flow = this.flow;
    while (this.reading && !flow.paused) {
      if (this.discard > 0) {
        const k = Math.min(this.discard, q.length);
        q.drop(k);
        this.discard -= k;
        if (this.discard > 0) return this.outOfInput();
      }
      // The magic is known from the first 4 bytes: a client speaking the
      // other header style is cut at once, not left waiting for more bytes.
      if (q.length >= 4 && q.u32(0) !== T.requestMagic(this.ext)) {
        this.reading = false;
        this.o.emit({ type: "FATAL", reason: `bad request magic 0x${q.u32(0).toString(16)}` });
        return;
      }
      if (q.length < H) return this.outOfInput();
      // Read in place when the header sits in one chunk (no view made per request), else gathered.
      const inPlace = q.contiguous(H);
      const hb = inPlace ? q.firstChunk : q.peek(0, H, this.scratchFor);
      const hp = inPlace ? q.firstAt : 0;
      if (!T.readRequest(hb, hp, this.ext, hdr)) {
        this.reading = false;
        this.o.emit({ type: "FATAL", reason: `bad request magic 0x${hb.readUInt32BE(hp).toString(16)}` });
        return;
      }
      const { type, flags, offset, cookieHi, cookieLo } = hdr;
      // "the meaning of the *length* field depends on whether *flags*
      // contains NBD_CMD_FLAG_PAYLOAD_LEN"; compact: only WRITE has a
      // payload. "The command NBD_CMD_WRITE MUST use the flag" in extended
      // mode, but qemu 10's client leaves it out (qemu-nbd reads the
      // payload anyway): a WRITE always carries its length of payload.
      const payloadLen = type === C.NBD_CMD_WRITE || (this.ext && flags & C.NBD_CMD_FLAG_PAYLOAD_LEN) ? hdr.length : 0;
      if (payloadLen > C.MAX_REQUEST_SIZE) {
        if (this.ext) {
          // "A server SHOULD initiate hard disconnect if a client sets the
          // NBD_CMD_FLAG_PAYLOAD_LEN flag and uses a *length* larger than a
          // server's advertised or default maximum payload length".
          this.reading = false;
          this.o.emit({ type: "FATAL", reason: `payload of ${payloadLen} bytes is over the maximum` });
          return;
        }
        // Compact WRITE too large to hold: answered EINVAL, its payload skipped as it streams in.
        q.drop(H);
        this.discard = payloadLen;
        this.bytesRead.value += H + payloadLen;
        this.requests++;
        this.out.error(type, C.NBD_EINVAL, "write payload larger than the maximum", cookieHi, cookieLo, offset);
        continue;
      }
      const reader = this.reader;
      const direct = this.direct;
      if (
        direct && type === C.NBD_CMD_WRITE && payloadLen >= DIRECT_MIN && !this.refusing &&
        !(flags & C.NBD_CMD_FLAG_FUA) && checkRequest(this.limits, type, flags, offset, payloadLen) === 0
      ) {
        // The payload is read from the socket straight into the pages it
        // writes (direct-write.ts). FUA writes take the stack's path (its
        // flush). Invalid ones too: they are answered with their error
        // once the payload is consumed.
        this.lastWrite = 0;
        q.drop(H);
        if (!direct.begin(q, cookieHi, cookieLo, offset, payloadLen)) return;
        if (!this.directDone()) return;
        continue;
      }
      if (reader && type === C.NBD_CMD_WRITE && payloadLen >= DIRECT_MIN) {
        this.lastWrite = payloadLen;
        const g = this.guessed;
        this.guessed = null;
        // The guess holds this request when the header and every byte queued after it are in it.
        const guessed = g !== null && g.length === H + payloadLen && q.startsWith(g) && q.contiguous(Math.min(q.length, H + payloadLen));
        if (guessed || q.length < H + payloadLen) {
          // The payload in its own buffer: the guessed one it is already
          // in, else a pooled one it is copied to as far as it has arrived.
          // The socket fills the rest straight into it.
          const have = Math.min(q.length, H + payloadLen) - H;
          const buf = guessed ? g : replyBuffers.get(payloadLen);
          const at = guessed ? H : 0;
          if (!guessed) q.copyTo(buf, H, have);
          q.drop(H + have);
          const length = hdr.length;
          const payload = guessed ? g.subarray(H) : buf;
          const whole = () => {
            this.bytesRead.value += H + payloadLen;
            return this.accept(type, flags, cookieHi, cookieLo, offset, length, payload, buf);
          };
          if (have === payloadLen) {
            if (!whole()) return;
            continue;
          }
          reader.direct(buf, at + have, () => {
            if (whole()) this.pump();
          });
          return;
        }
      } else if (type === C.NBD_CMD_WRITE) this.lastWrite = 0;
      if (q.length < H + payloadLen) return this.outOfInput();
      let payload: Buffer | null = null;
      let pooled: Buffer | null = null;
      if (payloadLen > 0) {
        // A view when header and payload sit in one socket chunk, else one
        // copy into a warm pooled buffer, given back once the request is done.
        if (q.contiguous(H + payloadLen)) {
          payload = q.peek(H, payloadLen);
          this.reader?.lend(payload);
        }
        else payload = pooled = q.peek(H, payloadLen, (n) => replyBuffers.get(n));
      }
      q.drop(H + payloadLen);
      this.bytesRead.value += H + payloadLen;
      if (!this.accept(type, flags, cookieHi, cookieLo, offset, hdr.length, payload, pooled)) return;
    }
  }

  /** A direct WRITE's payload is all in its pages: answered. False: nothing more is read. */
  private directDone(): boolean {
    const w = this.direct!.finish();
    this.bytesRead.value += this.headerSize + w.length;
    this.requests++;
    this.out.ok(w.cHi, w.cLo, w.offset);
    this.flow.pauseIfBusy();
    return true;
  }

  /** A whole request has been read: refused, or dispatched. False: nothing more is read. */
  private accept(
    type: number, flags: number, cHi: number, cLo: number, offset: number, length: number, payload: Buffer | null, pooled: Buffer | null,
  ): boolean {
    if (type === C.NBD_CMD_DISC) {
      // "The client MUST NOT send any requests after NBD_CMD_DISC": nothing more is read.
      this.reading = false;
      this.o.emit({ type: "NBD_CMD_DISC" });
      return false;
    }
    this.requests++;
    if (this.refusing) {
      if (pooled) replyBuffers.put(pooled);
      this.out.error(type, C.NBD_ESHUTDOWN, "the server is shutting down", cHi, cLo, offset);
      return true;
    }
    this.dispatch(type, flags, cHi, cLo, offset, length, payload, pooled);
    this.flow.pauseIfBusy();
    return true;
  }

  private dispatch(
    type: number, flags: number, cHi: number, cLo: number, offset: number, length: number, payload: Buffer | null, pooled: Buffer | null,
  ): void {
    let count = type === C.NBD_CMD_WRITE ? (payload?.length ?? length) : length;
    let ids: number[] | null = null;
    if (type === C.NBD_CMD_BLOCK_STATUS && flags & C.NBD_CMD_FLAG_PAYLOAD_LEN) {
      const p = blockStatusPayload(payload, this.neg.metaContexts);
      if (!p) {
        if (pooled) replyBuffers.put(pooled);
        this.out.error(type, C.NBD_EINVAL, "bad BLOCK_STATUS payload", cHi, cLo, offset);
        return;
      }
      count = p.effectLength;
      ids = p.ids;
    } else if (payload && type !== C.NBD_CMD_WRITE) {
      // A payload the command does not take: consumed, then refused.
      if (pooled) replyBuffers.put(pooled);
      this.out.error(type, C.NBD_EINVAL, "this command takes no payload", cHi, cLo, offset);
      return;
    }
    const err = checkRequest(this.limits, type, flags, offset, count);
    if (err !== 0) {
      if (pooled) replyBuffers.put(pooled);
      this.out.error(type, err, "request rejected", cHi, cLo, offset);
      return;
    }
    const mem = this.mem;
    if (mem !== null && type === C.NBD_CMD_READ) {
      // Straight from the storage's memory: nothing in flight, no await.
      this.out.readMemory(mem, flags, cHi, cLo, offset, count);
      return;
    }
    const f = stackFlags(type, flags);
    const ctx = this.ctx;
    const bytes = type === C.NBD_CMD_READ || type === C.NBD_CMD_WRITE ? count : 0;
    this.flow.started(bytes);
    let p: Promise<unknown>;
    if (type === C.NBD_CMD_READ) p = this.out.read(flags, cHi, cLo, offset, count);
    else if (type === C.NBD_CMD_BLOCK_STATUS) p = this.out.blockStatus(cHi, cLo, offset, count, f, ids);
    else p = callStack(ctx, type, payload, offset, count, f);
    p.then(
      () => {
        if (pooled) replyBuffers.put(pooled);
        if (type !== C.NBD_CMD_READ && type !== C.NBD_CMD_BLOCK_STATUS) this.out.ok(cHi, cLo, offset);
        this.flow.done(bytes);
      },
      (e: unknown) => {
        if (pooled) replyBuffers.put(pooled);
        this.errors++;
        this.o.failed(C.COMMAND_NAMES[type] ?? `command ${type}`, e);
        const errno = wireErrno(e, (flags & C.NBD_CMD_FLAG_FAST_ZERO) !== 0, (flags & C.NBD_CMD_FLAG_DF) !== 0);
        this.out.error(type, errno, errorMessage(e), cHi, cLo, offset);
        this.flow.done(bytes);
      },
    );
  }
}
