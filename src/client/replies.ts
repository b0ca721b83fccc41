// Transmission-phase reply parsing: simple replies and structured reply
// chunks, matched by cookie to requests in flight, completed on DONE.

import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_READ,
  NBD_EIO,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_BLOCK_STATUS_EXT,
  NBD_EXTENDED_REPLY_MAGIC,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_ERROR_OFFSET,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
  REPLY_TYPE_NAMES,
} from "../protocol/constants.js";
import {
  type BlockStatusExtent,
  decodeBlockStatusPayload,
  decodeErrorPayload,
  decodeOffsetHole,
  readU64,
} from "../protocol/wire.js";
import { NbdProtocolError, NbdRequestError } from "./errors.js";
import type { ByteQueue } from "./reader.js";

/** Largest structured chunk payload accepted before the connection is dropped. */
export const MAX_CHUNK_PAYLOAD = 64 * 1024 * 1024 + 4096;

/** One reply frame as seen on the wire (for the raw escape hatch). */
export type ReplyFrame =
  | { kind: "simple"; cookie: bigint; error: number; data: Buffer }
  | { kind: "structured"; cookie: bigint; flags: number; type: number; typeName: string; payload: Buffer };

/** What a raw request resolves with: every frame of its reply, errors included. */
export interface RawReply {
  /** First error seen (0 = success). */
  error: number;
  /** Read data (simple reply payload, or OFFSET_DATA/HOLE assembled) if any. */
  data?: Buffer;
  frames: ReplyFrame[];
}

/** A request in flight. */
export interface Pending {
  type: number;
  offset: number;
  count: number;
  resolve: (value: any) => void;
  reject: (err: Error) => void;
  /** Collect frames and never reject on NBD errors (raw requests). */
  raw?: RawReply;
  /** Bytes of data a simple reply carries on success (READ: count). */
  simpleDataLength: number;
  buf?: Buffer;
  covered: number;
  error?: NbdRequestError;
  extents?: Map<number, BlockStatusExtent[]>;
}

/** Parses every complete reply in `queue`, settling requests in `pending`. */
export class ReplyParser {
  /** Called with every frame parsed (raw.nextFrame uses it). */
  tap?: (frame: ReplyFrame) => void;
  /** Extended headers were negotiated: 32-byte reply headers, BLOCK_STATUS_EXT. */
  extended = false;

  constructor(
    private readonly queue: ByteQueue,
    readonly pending: Map<bigint, Pending>,
  ) {}

  /** Parse all complete frames; throws NbdProtocolError on a fatal violation. */
  parse(): void {
    const q = this.queue;
    while (q.length >= 4) {
      const magic = q.peekUInt32(0);
      if (magic === NBD_SIMPLE_REPLY_MAGIC) {
        // "If extended headers have been negotiated, a simple reply MUST NOT be used."
        if (this.extended) throw new NbdProtocolError("simple reply with extended headers");
        if (q.length < 16) return;
        const h = q.peek(16);
        const error = h.readUInt32BE(4);
        const cookie = h.readBigUInt64BE(8);
        const p = this.lookup(cookie);
        const n = error === 0 ? p.simpleDataLength : 0;
        if (q.length < 16 + n) return;
        q.skip(16);
        const data = q.take(n);
        this.pending.delete(cookie);
        if (this.tap || p.raw) this.frame(p, { kind: "simple", cookie, error, data });
        if (p.raw) {
          p.raw.error = error;
          if (n) p.raw.data = data;
          p.resolve(p.raw);
        } else if (error !== 0) p.reject(new NbdRequestError(error, p.type));
        else p.resolve(p.type === NBD_CMD_READ ? data : undefined);
      } else if (magic === NBD_STRUCTURED_REPLY_MAGIC || magic === NBD_EXTENDED_REPLY_MAGIC) {
        // "If extended headers are negotiated, all server replies MUST use an
        // extended reply"; otherwise a structured chunk is 20 bytes.
        const ext = magic === NBD_EXTENDED_REPLY_MAGIC;
        if (ext !== this.extended) throw new NbdProtocolError(ext ? "extended reply without extended headers" : "structured reply chunk with extended headers");
        const hs = ext ? 32 : 20;
        if (q.length < hs) return;
        const h = q.peek(hs);
        const length = ext ? h.readUInt32BE(24) * 0x1_0000_0000 + h.readUInt32BE(28) : h.readUInt32BE(16);
        if (length > MAX_CHUNK_PAYLOAD) throw new NbdProtocolError(`structured reply chunk too large: ${length} bytes`);
        if (q.length < hs + length) return;
        const flags = h.readUInt16BE(4);
        const type = h.readUInt16BE(6);
        const cookie = h.readBigUInt64BE(8);
        const p = this.lookup(cookie);
        q.skip(hs);
        const payload = q.take(length);
        if (this.tap || p.raw) {
          const typeName = REPLY_TYPE_NAMES[type] ?? `NBD_REPLY_TYPE_${type}`;
          this.frame(p, { kind: "structured", cookie, flags, type, typeName, payload });
        }
        this.chunk(p, type, payload);
        if (flags & NBD_REPLY_FLAG_DONE) {
          this.pending.delete(cookie);
          this.finish(p);
        }
      } else {
        throw new NbdProtocolError(`bad reply magic 0x${magic.toString(16).padStart(8, "0")}`);
      }
    }
  }

  private lookup(cookie: bigint): Pending {
    const p = this.pending.get(cookie);
    if (!p) throw new NbdProtocolError(`reply for unknown cookie ${cookie}`);
    return p;
  }

  private frame(p: Pending, f: ReplyFrame): void {
    p.raw?.frames.push(f);
    this.tap?.(f);
  }

  private fail(p: Pending, errno: number, message: string, offset?: number): void {
    p.error ??= new NbdRequestError(errno, p.type, message, offset);
  }

  /** Apply one structured chunk to its request. */
  private chunk(p: Pending, type: number, payload: Buffer): void {
    try {
      switch (type) {
        case NBD_REPLY_TYPE_NONE:
          if (payload.length !== 0) this.fail(p, NBD_EIO, "NBD_REPLY_TYPE_NONE with a payload");
          return;
        case NBD_REPLY_TYPE_OFFSET_DATA: {
          if (payload.length < 8) return this.fail(p, NBD_EIO, "short OFFSET_DATA chunk");
          const data = payload.subarray(8);
          const at = this.place(p, readU64(payload, 0), data.length, "OFFSET_DATA");
          if (at < 0) return;
          if (!p.buf && at === 0 && data.length === p.count) p.buf = data; // whole read: no copy
          else data.copy(this.buffer(p), at);
          p.covered += data.length;
          return;
        }
        case NBD_REPLY_TYPE_OFFSET_HOLE: {
          const hole = decodeOffsetHole(payload);
          const at = this.place(p, hole.offset, hole.size, "OFFSET_HOLE");
          if (at < 0) return;
          this.buffer(p).fill(0, at, at + hole.size);
          p.covered += hole.size;
          return;
        }
        case NBD_REPLY_TYPE_BLOCK_STATUS:
        case NBD_REPLY_TYPE_BLOCK_STATUS_EXT: {
          if (p.type !== NBD_CMD_BLOCK_STATUS) return this.fail(p, NBD_EIO, "BLOCK_STATUS chunk for another command");
          // "only NBD_REPLY_TYPE_BLOCK_STATUS for structured replies, and only NBD_REPLY_TYPE_BLOCK_STATUS_EXT for extended headers".
          const ext = type === NBD_REPLY_TYPE_BLOCK_STATUS_EXT;
          if (ext !== this.extended) return this.fail(p, NBD_EIO, `${ext ? "BLOCK_STATUS_EXT" : "BLOCK_STATUS"} chunk in the wrong header style`);
          const bs = decodeBlockStatusPayload(payload, ext);
          (p.extents ??= new Map()).set(bs.contextId, bs.extents);
          return;
        }
        case NBD_REPLY_TYPE_ERROR:
        case NBD_REPLY_TYPE_ERROR_OFFSET: {
          const e = decodeErrorPayload(payload, type === NBD_REPLY_TYPE_ERROR_OFFSET);
          return this.fail(p, e.error || NBD_EIO, e.message, e.offset);
        }
        default:
          if (type & 0x8000) {
            const errno = payload.length >= 4 ? payload.readUInt32BE(0) : NBD_EIO;
            return this.fail(p, errno || NBD_EIO, `unknown error chunk type ${type}`);
          }
          return this.fail(p, NBD_EIO, `unknown structured reply chunk type ${type}`);
      }
    } catch (err) {
      this.fail(p, NBD_EIO, `malformed chunk: ${(err as Error).message}`);
    }
  }

  /** Offset of a data/hole chunk within the read buffer, or -1 after recording an error. */
  private place(p: Pending, offset: number, length: number, what: string): number {
    const at = offset - p.offset;
    if (p.type !== NBD_CMD_READ) {
      this.fail(p, NBD_EIO, `${what} chunk for a non-read command`);
      return -1;
    }
    if (at < 0 || length === 0 || at + length > p.count) {
      this.fail(p, NBD_EIO, `${what} chunk outside the requested range`);
      return -1;
    }
    return at;
  }

  private buffer(p: Pending): Buffer {
    // Overlapping chunks are a server bug; finish() catches them by the byte count.
    return (p.buf ??= Buffer.allocUnsafe(p.count));
  }

  /** The DONE chunk arrived: settle the request. */
  private finish(p: Pending): void {
    if (p.type === NBD_CMD_READ && !p.error && p.covered !== p.count) {
      this.fail(p, NBD_EIO, `server sent ${p.covered} of ${p.count} bytes`);
    }
    if (p.type === NBD_CMD_BLOCK_STATUS && !p.error && !p.extents) {
      this.fail(p, NBD_EIO, "no BLOCK_STATUS chunk in the reply");
    }
    if (p.raw) {
      p.raw.error = p.error?.errno ?? 0;
      if (p.buf) p.raw.data = p.buf;
      p.resolve(p.raw);
    } else if (p.error) p.reject(p.error);
    else if (p.type === NBD_CMD_READ) p.resolve(p.buf ?? Buffer.alloc(0));
    else if (p.type === NBD_CMD_BLOCK_STATUS) p.resolve(p.extents);
    else p.resolve(undefined);
  }
}
