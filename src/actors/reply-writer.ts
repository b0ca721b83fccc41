// The replies of one connection's transmission, written in place into its
// ReplyQueue: simple replies, structured and extended chunks, READ data
// (holes as NBD_REPLY_TYPE_OFFSET_HOLE) and block status. The request
// loop (transmission.ts) decides what to answer; this file knows how each
// answer looks on the wire.

import { clipExtents } from "../backend/extents.js";
import { FLAG_REQ_ONE, type Context, type DirectMemory, type Extent, type ReadPiece } from "../backend/types.js";
import * as C from "../protocol/constants.js";
import * as T from "../protocol/transmission.js";
import { replyBuffers } from "./buffer-pool.js";
import type { ReplyQueue } from "./reply-queue.js";
import { objectArray } from "./object-array.js";

/** Descriptors per status chunk at most. */
const MAX_EXTENTS = 1 << 20;
/** A hole shorter than this is sent as zeros inside the data around it (a chunk costs more). */
const MIN_HOLE_CHUNK = 4096;

/** What the replies depend on of the negotiation (transmission.ts's Negotiated has it). */
export interface ReplyFormat {
  structuredReplies: boolean;
  extendedHeaders: boolean;
  metaContexts: ReadonlyArray<{ id: number; name: string }>;
}

export class ReplyWriter {
  /** The client is gone: nothing more is written (buffers go straight back). */
  gone = false;
  private readonly ext: boolean;
  private readonly structured: boolean;
  private readonly contexts: ReplyFormat["metaContexts"];
  /** readMemory's pieces, reused. */
  private readonly pieces: (Buffer | number)[] = objectArray();

  constructor(
    private readonly replies: ReplyQueue,
    private readonly ctx: Context,
    neg: ReplyFormat,
    private readonly bytesWritten: { value: number },
  ) {
    this.ext = neg.extendedHeaders;
    this.structured = neg.structuredReplies;
    this.contexts = neg.metaContexts;
  }

  /** A successful reply without payload: simple, or with extended headers an NBD_REPLY_TYPE_NONE chunk. */
  ok(cHi: number, cLo: number, offset: number): void {
    if (this.gone) return;
    if (this.ext) {
      const { buf, pos } = this.replies.reserve(T.EXTENDED_REPLY_SIZE);
      T.writeChunk(buf, pos, true, C.NBD_REPLY_FLAG_DONE, C.NBD_REPLY_TYPE_NONE, cHi, cLo, offset, 0);
      this.bytesWritten.value += T.EXTENDED_REPLY_SIZE;
    } else {
      const { buf, pos } = this.replies.reserve(T.SIMPLE_REPLY_SIZE);
      T.writeSimpleReply(buf, pos, 0, cHi, cLo);
      this.bytesWritten.value += T.SIMPLE_REPLY_SIZE;
    }
  }

  /**
   * An error reply: with extended headers always an error chunk ("a simple
   * reply MUST NOT be used"); with structured replies an error chunk for
   * READ ("MUST NOT use a simple reply for NBD_CMD_READ (even for the case
   * of an early NBD_EINVAL due to bad flags)") and BLOCK_STATUS; else simple.
   */
  error(type: number, errno: number, message: string, cHi: number, cLo: number, offset: number): void {
    if (this.gone) return;
    const chunk = this.ext || (this.structured && (type === C.NBD_CMD_READ || type === C.NBD_CMD_BLOCK_STATUS));
    if (!chunk) {
      const { buf, pos } = this.replies.reserve(T.SIMPLE_REPLY_SIZE);
      T.writeSimpleReply(buf, pos, errno, cHi, cLo);
      this.bytesWritten.value += T.SIMPLE_REPLY_SIZE;
      return;
    }
    const msg = Buffer.from(message.slice(0, 512), "utf8").subarray(0, T.MAX_ERROR_MESSAGE);
    const hs = T.chunkHeaderSize(this.ext);
    const n = hs + T.errorPayloadSize(msg.length);
    const { buf, pos } = this.replies.reserve(n);
    T.writeChunk(buf, pos, this.ext, C.NBD_REPLY_FLAG_DONE, C.NBD_REPLY_TYPE_ERROR, cHi, cLo, offset, n - hs);
    T.writeErrorPayload(buf, pos + hs, errno, msg);
    this.bytesWritten.value += n;
  }

  async read(flags: number, cHi: number, cLo: number, offset: number, count: number): Promise<void> {
    if (!this.structured) {
      // Simple reply: header and data in one buffer, one write.
      const b = replyBuffers.get(T.SIMPLE_REPLY_SIZE + count);
      try {
        await this.ctx.pread(b.subarray(T.SIMPLE_REPLY_SIZE), offset, 0);
      } catch (e) {
        replyBuffers.put(b);
        throw e;
      }
      T.writeSimpleReply(b, 0, 0, cHi, cLo);
      this.queueData(b);
      return;
    }
    const hs = T.chunkHeaderSize(this.ext);
    const head = hs + T.OFFSET_DATA_PREFIX;
    const b = replyBuffers.get(head + count);
    const data = b.subarray(head);
    let pieces: ReadPiece[];
    try {
      // "NBD_CMD_FLAG_DF ... the server MUST NOT fragment the reply": plain data then.
      if (flags & C.NBD_CMD_FLAG_DF) {
        await this.ctx.pread(data, offset, 0);
        pieces = [{ length: count, hole: false }];
      } else pieces = mergeHoles(await this.ctx.preadSparse(data, offset, 0), data);
    } catch (e) {
      replyBuffers.put(b);
      throw e;
    }
    if (this.gone) {
      replyBuffers.put(b);
      return;
    }
    if (pieces.length === 1 && !pieces[0]!.hole) {
      T.writeChunk(b, 0, this.ext, C.NBD_REPLY_FLAG_DONE, C.NBD_REPLY_TYPE_OFFSET_DATA, cHi, cLo, offset, T.OFFSET_DATA_PREFIX + count);
      T.writeOffset(b, hs, offset);
      this.queueData(b);
      return;
    }
    this.sparseChunks(b, head, pieces, cHi, cLo, offset);
  }

  /**
   * A READ answered from the storage's own memory (DirectMemory): the
   * header goes into the reply arena, the data as views of the pages, so
   * the only copy is the kernel's into the socket. Holes of at least
   * MIN_HOLE_CHUNK are OFFSET_HOLE chunks on a structured reply without
   * DF; shorter ones, and every hole of a simple or DF reply, are zeros
   * from one shared zero buffer.
   */
  readMemory(mem: DirectMemory, flags: number, cHi: number, cLo: number, offset: number, count: number): void {
    if (this.gone) return;
    const pieces = this.pieces;
    pieces.length = 0;
    mem.view(count, offset, pieces);
    const release = this.releaseFor(mem);
    if (!this.structured) {
      const { buf, pos } = this.replies.reserve(T.SIMPLE_REPLY_SIZE);
      T.writeSimpleReply(buf, pos, 0, cHi, cLo);
      this.bytesWritten.value += T.SIMPLE_REPLY_SIZE;
      this.pushPieces(0, pieces.length, release);
      return;
    }
    const hs = T.chunkHeaderSize(this.ext);
    const head = hs + T.OFFSET_DATA_PREFIX;
    const chunked = (flags & C.NBD_CMD_FLAG_DF) === 0;
    // The views are released with the write of the last piece sent as data (writes finish in order).
    let lastData = pieces.length - 1;
    while (lastData >= 0 && chunked && typeof pieces[lastData] === "number" && (pieces[lastData] as number) >= MIN_HOLE_CHUNK) lastData--;
    if (lastData < 0) release();
    let at = 0; // bytes of the read covered so far
    let i = 0;
    while (i < pieces.length) {
      const p = pieces[i]!;
      if (chunked && typeof p === "number" && p >= MIN_HOLE_CHUNK) {
        const { buf, pos } = this.replies.reserve(hs + T.OFFSET_HOLE_SIZE);
        const done = i === pieces.length - 1 ? C.NBD_REPLY_FLAG_DONE : 0;
        T.writeChunk(buf, pos, this.ext, done, C.NBD_REPLY_TYPE_OFFSET_HOLE, cHi, cLo, offset, T.OFFSET_HOLE_SIZE);
        T.writeOffsetHole(buf, pos + hs, offset + at, p);
        this.bytesWritten.value += hs + T.OFFSET_HOLE_SIZE;
        at += p;
        i++;
        continue;
      }
      // One data chunk: every piece up to the next hole worth its own chunk.
      let j = i;
      let len = 0;
      while (j < pieces.length) {
        const q = pieces[j]!;
        if (chunked && typeof q === "number" && q >= MIN_HOLE_CHUNK) break;
        len += typeof q === "number" ? q : q.length;
        j++;
      }
      const { buf, pos } = this.replies.reserve(head);
      T.writeChunk(buf, pos, this.ext, j === pieces.length ? C.NBD_REPLY_FLAG_DONE : 0, C.NBD_REPLY_TYPE_OFFSET_DATA, cHi, cLo, offset, T.OFFSET_DATA_PREFIX + len);
      T.writeOffset(buf, pos + hs, offset + at);
      this.bytesWritten.value += head;
      this.pushPieces(i, j, lastData < j ? release : null);
      at += len;
      i = j;
    }
  }

  private releaseMem: DirectMemory | null = null;
  private releaseFn: (() => void) | null = null;
  /** One release callback per storage (a connection reads from one). */
  private releaseFor(mem: DirectMemory): () => void {
    if (this.releaseMem !== mem) {
      this.releaseMem = mem;
      this.releaseFn = () => mem.release();
    }
    return this.releaseFn!;
  }

  /** pieces[from, to) onto the queue: views as they are, holes as zeros; `done` after the last. */
  private pushPieces(from: number, to: number, done: (() => void) | null): void {
    const pieces = this.pieces;
    for (let k = from; k < to; k++) {
      const p = pieces[k]!;
      const end = k === to - 1 ? (done ?? undefined) : undefined;
      if (typeof p !== "number") {
        this.bytesWritten.value += p.length;
        this.replies.push(p, end);
        continue;
      }
      this.bytesWritten.value += p;
      for (let left = p; left > 0; ) {
        const n = Math.min(left, ZEROS.length);
        left -= n;
        this.replies.push(n === ZEROS.length ? ZEROS : ZEROS.subarray(0, n), left === 0 ? end : undefined);
      }
    }
    if (from === to) done?.();
  }

  /** Data and hole chunks for a sparse read: holes as NBD_REPLY_TYPE_OFFSET_HOLE, nothing of them on the wire. */
  private sparseChunks(b: Buffer, head: number, pieces: ReadPiece[], cHi: number, cLo: number, offset: number): void {
    const hs = T.chunkHeaderSize(this.ext);
    const last = pieces.length - 1;
    let at = 0;
    // The buffer goes back to the pool after the last data piece written from it.
    let lastData = -1;
    for (let i = 0; i < pieces.length; i++) if (!pieces[i]!.hole) lastData = i;
    if (lastData < 0) replyBuffers.put(b);
    for (let i = 0; i <= last; i++) {
      const piece = pieces[i]!;
      const flags = i === last ? C.NBD_REPLY_FLAG_DONE : 0;
      const pieceOffset = offset + at;
      if (piece.hole) {
        const { buf, pos } = this.replies.reserve(hs + T.OFFSET_HOLE_SIZE);
        T.writeChunk(buf, pos, this.ext, flags, C.NBD_REPLY_TYPE_OFFSET_HOLE, cHi, cLo, offset, T.OFFSET_HOLE_SIZE);
        T.writeOffsetHole(buf, pos + hs, pieceOffset, piece.length);
        this.bytesWritten.value += hs + T.OFFSET_HOLE_SIZE;
      } else if (at === 0) {
        // The first piece's header fits in front of it, in the buffer itself.
        T.writeChunk(b, 0, this.ext, flags, C.NBD_REPLY_TYPE_OFFSET_DATA, cHi, cLo, offset, T.OFFSET_DATA_PREFIX + piece.length);
        T.writeOffset(b, hs, pieceOffset);
        this.push(b.subarray(0, head + piece.length), i === lastData ? b : null);
      } else {
        const { buf, pos } = this.replies.reserve(head);
        T.writeChunk(buf, pos, this.ext, flags, C.NBD_REPLY_TYPE_OFFSET_DATA, cHi, cLo, offset, T.OFFSET_DATA_PREFIX + piece.length);
        T.writeOffset(buf, pos + hs, pieceOffset);
        this.bytesWritten.value += head;
        this.push(b.subarray(head + at, head + at + piece.length), i === lastData ? b : null);
      }
      at += piece.length;
    }
  }

  private push(view: Buffer, release: Buffer | null): void {
    this.bytesWritten.value += view.length;
    this.replies.push(view, release ? () => replyBuffers.put(release) : undefined);
  }

  private queueData(b: Buffer): void {
    if (this.gone) {
      replyBuffers.put(b);
      return;
    }
    this.bytesWritten.value += b.length;
    this.replies.push(b, () => replyBuffers.put(b));
  }

  /** One status chunk per selected context ("exactly one status chunk per negotiated metadata context ID"). */
  async blockStatus(cHi: number, cLo: number, offset: number, count: number, f: number, ids: number[] | null): Promise<void> {
    const chosen = ids ? this.contexts.filter((m) => ids.includes(m.id)) : this.contexts;
    const reqOne = (f & FLAG_REQ_ONE) !== 0;
    const all = await Promise.all(
      chosen.map(async (m): Promise<Extent[]> => {
        const e = m.name === C.BASE_ALLOCATION ? await this.ctx.extents(count, offset, f) : await this.ctx.contextExtents(m.name, count, offset, f);
        // "Servers SHOULD NOT send more than 2^20 extents in a single reply chunk".
        const clipped = clipExtents(e, count, reqOne);
        return clipped.length > MAX_EXTENTS ? clipped.slice(0, MAX_EXTENTS) : clipped;
      }),
    );
    if (this.gone) return;
    const hs = T.chunkHeaderSize(this.ext);
    chosen.forEach((m, i) => {
      const ext = all[i]!;
      const len = T.blockStatusSize(this.ext, ext.length);
      const { buf, pos } = this.replies.reserveAny(hs + len);
      T.writeChunk(buf, pos, this.ext, i === chosen.length - 1 ? C.NBD_REPLY_FLAG_DONE : 0,
        this.ext ? C.NBD_REPLY_TYPE_BLOCK_STATUS_EXT : C.NBD_REPLY_TYPE_BLOCK_STATUS, cHi, cLo, offset, len);
      T.writeBlockStatus(buf, pos + hs, this.ext, m.id, ext);
      this.bytesWritten.value += hs + len;
    });
  }
}

/** Zeros for holes inside data replies of readMemory: only ever read. */
const ZEROS = Buffer.alloc(1024 * 1024);

/** Holes too short to be worth a chunk are zeros inside the data (written into buf). */
function mergeHoles(pieces: ReadPiece[], buf: Buffer): ReadPiece[] {
  if (pieces.length === 1) {
    if (pieces[0]!.hole && pieces[0]!.length < MIN_HOLE_CHUNK) {
      buf.fill(0);
      return [{ length: buf.length, hole: false }];
    }
    return pieces;
  }
  const out: ReadPiece[] = [];
  let at = 0;
  for (const p of pieces) {
    const hole = p.hole && p.length >= MIN_HOLE_CHUNK;
    if (p.hole && !hole) buf.fill(0, at, at + p.length);
    const prev = out[out.length - 1];
    if (prev && prev.hole === hole) prev.length += p.length;
    else out.push({ length: p.length, hole });
    at += p.length;
  }
  return out;
}
