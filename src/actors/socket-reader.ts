// Reading a plain (TCP or unix) socket into memory the server chooses, with
// Node's `onread` option: the kernel writes each read straight into the
// buffer given, so nothing is allocated per read and a WRITE's payload can
// land in its own buffer, never copied out of socket chunks (half of the
// overwrite profile was those copies and the GC of 64 KiB read chunks).
//
// Between payloads reads go into an arena, a buffer filled from the front
// whose views the ByteQueue holds (a new one once it is full, twice as
// large up to 64 KiB; the old is freed when the last view of it is
// dropped). When the transmission
// loop finds a large WRITE whose payload has not arrived whole, it hands a
// buffer here (direct()): the next reads fill exactly that, and nothing
// past the payload is read into it. After such a payload the next read is
// one request header long, so the payload after it can go direct too.
//
// Accepted sockets cannot be given `onread`, so the server takes the
// handle of each paused accepted socket into a new net.Socket that has it
// (adopt()). TLS sockets and stdio keep 'data' events.

import net from "node:net";

const ARENA_SIZE = 64 * 1024;
/** A new connection's first arena (negotiation reads a few hundred bytes). */
const FIRST_ARENA_SIZE = 8 * 1024;
/** An arena with less room than this is replaced (a read into a sliver would be short). */
const MIN_ROOM = 2048;

/** Where the bytes read go. */
export interface ReadSink {
  /** Bytes that arrived outside a direct read (a view into an arena, valid until dropped). */
  bytes(chunk: Buffer): void;
  /** Whether views of this storage are still queued (recycle() needs it). */
  holds?(storage: ArrayBufferLike): boolean;
}

export class SocketReader {
  sink: ReadSink | null = null;
  private arena: Buffer = Buffer.allocUnsafe(FIRST_ARENA_SIZE);
  private used = 0;
  private limit = ARENA_SIZE;
  private target: Buffer | null = null;
  private filled = 0;
  private whenFull: (() => void) | null = null;
  /** The buffer handed to the socket for the read in progress, and whether it is the target's. */
  private current: Buffer | null = null;
  private intoTarget = false;
  private guess: Buffer | null = null;
  private intoGuess = false;
  /** Views of the current arena went out (lend()): it is never reused. */
  private lent = false;
  private drained = false;
  private recycling = false;
  /** The arena before the current one, for reuse (recycle()). */
  private spare: Buffer | null = null;
  private spareLent = false;

  /** Node's `onread.buffer`: called for the first read and after each one. */
  readonly next = (): Buffer => {
    this.intoGuess = false;
    const t = this.target;
    if (t) {
      this.intoTarget = true;
      // The whole target for its first read: no view made per payload.
      return (this.current = this.filled === 0 ? t : t.subarray(this.filled));
    }
    this.intoTarget = false;
    const guess = this.guess;
    if (guess) {
      this.guess = null;
      this.intoGuess = true;
      return (this.current = guess);
    }
    if (this.drained && !this.lent) this.used = 0;
    this.drained = false;
    if (this.arena.length - this.used < MIN_ROOM) this.nextArena();
    const end = Math.min(this.arena.length, this.used + this.limit);
    this.limit = ARENA_SIZE;
    return (this.current = this.arena.subarray(this.used, end));
  };

  /** Node's `onread.callback`: n bytes arrived in the buffer next() gave. */
  readonly callback = (n: number, buf: Uint8Array): void => {
    if (buf !== this.current) return;
    this.drained = false;
    if (this.intoTarget) {
      this.filled += n;
      if (this.filled === this.target!.length) this.targetFull();
      return;
    }
    let chunk: Buffer;
    if (this.intoGuess) chunk = this.current!.subarray(0, n);
    else {
      const start = this.used;
      this.used += n;
      chunk = this.arena.subarray(start, start + n);
    }
    while (this.target) {
      // The read was already under way into the arena (or a guess) when direct() was
      // called: what belongs to the payload is copied, the rest queued after it
      // (or copied on into the next target, when the one filled set another).
      const k = Math.min(chunk.length, this.target.length - this.filled);
      chunk.copy(this.target, this.filled, 0, k);
      this.filled += k;
      chunk = chunk.subarray(k);
      if (this.filled === this.target.length) this.targetFull();
      if (chunk.length === 0) return;
      // The target's owner ran (targetFull) before the rest of this read
      // was queued, and may have found the queue empty (consumed()): these
      // bytes are in the arena and queued now, so its front is not free.
      this.drained = false;
    }
    this.sink?.bytes(chunk);
  };

  private targetFull(): void {
    const done = this.whenFull!;
    this.target = null;
    this.whenFull = null;
    done();
  }

  /**
   * Read the rest of `into` (its first `have` bytes are already there)
   * straight from the socket, then call `full`. Nothing else is read
   * until it is full.
   */
  direct(into: Buffer, have: number, full: () => void): void {
    this.target = into;
    this.filled = have;
    this.whenFull = full;
  }

  /**
   * The next read goes into `buf` instead of the arena: the transmission
   * loop guesses that a WRITE like the last one comes next and gives a
   * buffer that holds its header and payload, so that payload needs
   * neither a copy nor a read of its own header first.
   */
  guessNext(buf: Buffer): void {
    this.guess = buf;
  }

  /**
   * The current arena is full: the next one is the spare (the one before)
   * when recycling, nothing lent from it and nothing of it still queued;
   * else a new one. Arenas grow as a connection reads more: an idle one
   * holds 8 KiB.
   */
  private nextArena(): void {
    const old = this.arena;
    const spare = this.spare;
    if (spare !== null && !this.spareLent && !this.sink?.holds?.(spare.buffer)) {
      this.arena = spare;
    } else {
      this.arena = Buffer.allocUnsafe(Math.min(ARENA_SIZE, old.length * 2));
    }
    // The full one waits as the spare, unless views of it were lent.
    this.spare = this.recycling && old.length === ARENA_SIZE && !this.lent ? old : null;
    this.spareLent = false;
    this.used = 0;
    this.lent = false;
  }

  /**
   * From now on (transmission: every view of the queue is either consumed
   * at once or lent) full arenas are reused once nothing of them is
   * queued: a stream of small requests reads into two warm buffers instead
   * of a new 64 KiB one every 64 KiB (garbage only a collection frees: 24
   * clients flooding FLUSH made a worker thread hold 60 MiB of it). The
   * arena of the negotiation may still be in views: it is never reused.
   */
  recycle(): void {
    this.recycling = true;
    this.lent = true;
    this.spare = null;
  }

  /** A view of queued bytes went to someone who may keep it (a WRITE payload): its arena is not reused. */
  lend(view: Buffer): void {
    if (view.buffer === this.arena.buffer) this.lent = true;
    else if (view.buffer === this.spare?.buffer) this.spareLent = true;
  }

  /**
   * Everything read so far has been consumed (the queue is empty). If no
   * view of the arena was lent, the next read starts at its front again:
   * a stream of small requests reads into one warm buffer instead of a new
   * 64 KiB one every 64 KiB (garbage that only a full collection frees:
   * 24 clients flooding FLUSH made a worker thread hold 60 MiB of it).
   * Taken at the next next(), which Node calls right after the callback
   * whose bytes were consumed, when no read into the arena is pending.
   */
  consumed(): void {
    this.drained = true;
  }

  /** The next read into the arena takes at most n bytes. */
  nextReadAtMost(n: number): void {
    this.limit = n;
  }

  /** A guess is set and its read has not happened yet. */
  get guessing(): boolean {
    return this.guess !== null;
  }

  /** A direct read is in progress. */
  get reading(): boolean {
    return this.target !== null;
  }
}

const READER = Symbol("nbdstate.socketReader");

/** The file descriptor of a plain socket's handle (-1: none, e.g. TLS or a stream without one). */
export function fdOf(s: unknown): number {
  const fd = (s as { _handle?: { fd?: unknown } } | null)?._handle?.fd;
  return typeof fd === "number" && fd >= 0 ? fd : -1;
}

/** The reader of a socket adopted by adopt(), if it has one. */
export function readerOf(s: unknown): SocketReader | undefined {
  return (s as { [READER]?: SocketReader } | null)?.[READER];
}

/**
 * A socket accepted with pauseOnConnect, moved onto a net.Socket that
 * reads through a SocketReader. Reading starts once the reader's sink is
 * set and `socket.resume()` is called.
 */
export function adopt(accepted: net.Socket): net.Socket {
  const handle = (accepted as unknown as { _handle: unknown })._handle;
  if (!handle) return accepted;
  const reader = new SocketReader();
  // The accepted socket lets go of the handle: destroying it now only
  // settles the listener's connection count.
  (accepted as unknown as { _handle: unknown })._handle = null;
  const socket = new net.Socket({
    handle,
    allowHalfOpen: true,
    readable: true,
    writable: true,
    manualStart: true,
    onread: { buffer: reader.next, callback: reader.callback },
  } as net.SocketConstructorOpts & { handle: unknown; manualStart: boolean });
  (socket as unknown as { [READER]: SocketReader })[READER] = reader;
  // The listener counts connections by their sockets' close events.
  socket.once("close", () => accepted.destroy());
  return socket;
}
