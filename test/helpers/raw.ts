// A minimal NBD client over a raw socket (node:net, no client library), for
// feeding servers malformed or hostile input. Framing follows
// NetworkBlockDevice/nbd doc/proto.md (fixed newstyle negotiation, simple
// replies). All numbers are big-endian.
import { connect, type Socket } from "node:net";

export const NBDMAGIC = 0x4e42444d41474943n; // "NBDMAGIC"
export const IHAVEOPT = 0x49484156454f5054n; // "IHAVEOPT"
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

export const FLAG_FIXED_NEWSTYLE = 1 << 0; // handshake flag
export const FLAG_NO_ZEROES = 1 << 1; // handshake flag
export const FLAG_C_FIXED_NEWSTYLE = 1 << 0; // client flag
export const FLAG_C_NO_ZEROES = 1 << 1; // client flag

export const FLAG_HAS_FLAGS = 1 << 0; // transmission flags
export const FLAG_READ_ONLY = 1 << 1;

export const OPT = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
} as const;

export const REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: 0x80000001,
  ERR_POLICY: 0x80000002,
  ERR_INVALID: 0x80000003,
  ERR_PLATFORM: 0x80000004,
  ERR_TLS_REQD: 0x80000005,
  ERR_UNKNOWN: 0x80000006,
  ERR_SHUTDOWN: 0x80000007,
  ERR_BLOCK_SIZE_REQD: 0x80000008,
  ERR_TOO_BIG: 0x80000009,
} as const;

export const INFO_EXPORT = 0;

export const CMD = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
} as const;

export const ERRNO = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;

export class RawClosedError extends Error {}
export class RawTimeoutError extends Error {}

/** A socket with exact-length reads and a "did the peer close?" probe. */
export class RawConn {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waiter: (() => void) | undefined;
  private _closed = false;
  private _error: Error | undefined;

  private constructor(readonly socket: Socket) {
    socket.on("data", (b: Buffer) => {
      this.chunks.push(b);
      this.buffered += b.length;
      this.wake();
    });
    socket.on("end", () => {
      this._closed = true;
      this.wake();
    });
    socket.on("close", () => {
      this._closed = true;
      this.wake();
    });
    socket.on("error", (e) => {
      this._error = e;
      this._closed = true;
      this.wake();
    });
  }

  static connect(path: string, timeoutMs = 10_000): Promise<RawConn> {
    return new Promise((res, rej) => {
      const s = connect({ path });
      const t = setTimeout(() => {
        s.destroy();
        rej(new RawTimeoutError(`connect ${path}: timeout`));
      }, timeoutMs);
      s.once("connect", () => {
        clearTimeout(t);
        s.removeAllListeners("error");
        res(new RawConn(s));
      });
      s.once("error", (e) => {
        clearTimeout(t);
        rej(e);
      });
    });
  }

  /** True once the peer closed (EOF), reset the connection, or we closed it. */
  get closed(): boolean {
    return this._closed;
  }

  get bufferedBytes(): number {
    return this.buffered;
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length ? [rest] : [];
    this.buffered = rest.length;
    return out;
  }

  /** Read exactly n bytes; rejects on EOF before n bytes or on timeout. */
  async read(n: number, timeoutMs = 10_000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.buffered < n) {
      if (this._closed) {
        throw new RawClosedError(
          `connection closed after ${this.buffered} of ${n} bytes` + (this._error ? ` (${this._error.message})` : ""),
        );
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new RawTimeoutError(`timeout reading ${n} bytes (have ${this.buffered})`);
      await new Promise<void>((res) => {
        const t = setTimeout(res, left);
        this.waiter = () => {
          clearTimeout(t);
          res();
        };
      });
    }
    return this.take(n);
  }

  write(buf: Buffer | Uint8Array): void {
    if (!this.socket.destroyed) this.socket.write(buf);
  }

  /** Write and wait until the data is handed to the kernel (or the write fails). */
  writeAsync(buf: Buffer | Uint8Array): Promise<void> {
    return new Promise((res) => {
      if (this.socket.destroyed) return res();
      this.socket.write(buf, () => res());
    });
  }

  /**
   * Wait up to timeoutMs for the peer to close the connection, discarding
   * anything it sends meanwhile. Resolves true if it closed.
   */
  async waitClosed(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this._closed) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((res) => {
        const t = setTimeout(res, left);
        this.waiter = () => {
          clearTimeout(t);
          res();
        };
      });
      this.chunks = [];
      this.buffered = 0;
    }
    return true;
  }

  /** Half-close our side (send FIN), keep reading. */
  end(): void {
    this.socket.end();
  }

  /** Close immediately. */
  destroy(): void {
    this.socket.destroy();
    this._closed = true;
  }
}

// ---------------------------------------------------------------------------
// Encoding helpers

export function u16(v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v);
  return b;
}
export function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b;
}
export function u64(v: bigint | number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(v));
  return b;
}

/** IHAVEOPT, option, length, data. `length` overrides data.length (for lies). */
export function encodeOption(option: number, data: Buffer = Buffer.alloc(0), length = data.length): Buffer {
  return Buffer.concat([u64(IHAVEOPT), u32(option), u32(length), data]);
}

export interface Request {
  flags?: number;
  type: number;
  handle: bigint;
  offset: bigint | number;
  length: number;
  data?: Buffer;
  /** Override the magic (for bad-magic tests). */
  magic?: number;
}

export function encodeRequest(r: Request): Buffer {
  const h = Buffer.alloc(28);
  h.writeUInt32BE((r.magic ?? REQUEST_MAGIC) >>> 0, 0);
  h.writeUInt16BE(r.flags ?? 0, 4);
  h.writeUInt16BE(r.type, 6);
  h.writeBigUInt64BE(r.handle, 8);
  h.writeBigUInt64BE(BigInt(r.offset), 16);
  h.writeUInt32BE(r.length >>> 0, 24);
  return r.data ? Buffer.concat([h, r.data]) : h;
}

// ---------------------------------------------------------------------------
// Protocol steps

export interface Greeting {
  handshakeFlags: number;
}

/** Read NBDMAGIC, IHAVEOPT and the 16-bit handshake flags. */
export async function readGreeting(c: RawConn): Promise<Greeting> {
  const b = await c.read(18);
  const magic = b.readBigUInt64BE(0);
  const ihaveopt = b.readBigUInt64BE(8);
  if (magic !== NBDMAGIC) throw new Error(`bad NBDMAGIC ${magic.toString(16)}`);
  if (ihaveopt !== IHAVEOPT) throw new Error(`not newstyle: ${ihaveopt.toString(16)}`);
  return { handshakeFlags: b.readUInt16BE(16) };
}

/** Read the greeting and answer with fixed-newstyle (+ no-zeroes if offered). */
export async function handshake(c: RawConn): Promise<{ handshakeFlags: number; clientFlags: number }> {
  const { handshakeFlags } = await readGreeting(c);
  let clientFlags = FLAG_C_FIXED_NEWSTYLE;
  if (handshakeFlags & FLAG_NO_ZEROES) clientFlags |= FLAG_C_NO_ZEROES;
  c.write(u32(clientFlags));
  return { handshakeFlags, clientFlags };
}

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

export async function readOptionReply(c: RawConn, timeoutMs = 10_000): Promise<OptionReply> {
  const h = await c.read(20, timeoutMs);
  const magic = h.readBigUInt64BE(0);
  if (magic !== OPTION_REPLY_MAGIC) throw new Error(`bad option reply magic ${magic.toString(16)}`);
  const option = h.readUInt32BE(8);
  const type = h.readUInt32BE(12);
  const len = h.readUInt32BE(16);
  const data = len ? await c.read(len, timeoutMs) : Buffer.alloc(0);
  return { option, type, data };
}

export function isErrorReply(type: number): boolean {
  return (type & 0x80000000) !== 0;
}

/** NBD_OPT_LIST: returns the export names (reads up to the final ACK or error). */
export async function optList(c: RawConn): Promise<string[]> {
  c.write(encodeOption(OPT.LIST));
  const names: string[] = [];
  for (;;) {
    const r = await readOptionReply(c);
    if (r.option !== OPT.LIST) throw new Error(`reply to option ${r.option}, expected LIST`);
    if (r.type === REP.SERVER) {
      const n = r.data.readUInt32BE(0);
      names.push(r.data.subarray(4, 4 + n).toString("utf8"));
    } else if (r.type === REP.ACK) {
      return names;
    } else {
      throw new Error(`NBD_OPT_LIST failed: reply type 0x${r.type.toString(16)}`);
    }
  }
}

export interface ExportInfo {
  size: bigint;
  flags: number;
}

/** NBD_OPT_STRUCTURED_REPLY; resolves whether it was acknowledged. */
export async function optStructuredReply(c: RawConn): Promise<boolean> {
  c.write(encodeOption(OPT.STRUCTURED_REPLY));
  const r = await readOptionReply(c);
  return r.type === REP.ACK;
}

/**
 * NBD_OPT_GO for `name` (no info requests): reads NBD_REP_INFO replies until
 * NBD_REP_ACK and returns the export size and transmission flags.
 */
export async function optGo(c: RawConn, name = ""): Promise<ExportInfo> {
  const n = Buffer.from(name, "utf8");
  c.write(encodeOption(OPT.GO, Buffer.concat([u32(n.length), n, u16(0)])));
  let info: ExportInfo | undefined;
  for (;;) {
    const r = await readOptionReply(c);
    if (r.option !== OPT.GO) throw new Error(`reply to option ${r.option}, expected GO`);
    if (r.type === REP.INFO) {
      if (r.data.readUInt16BE(0) === INFO_EXPORT) {
        info = { size: r.data.readBigUInt64BE(2), flags: r.data.readUInt16BE(10) };
      }
    } else if (r.type === REP.ACK) {
      if (!info) throw new Error("NBD_OPT_GO acknowledged without NBD_INFO_EXPORT");
      return info;
    } else {
      throw new Error(`NBD_OPT_GO failed: reply type 0x${r.type.toString(16)} ${r.data.toString("utf8")}`);
    }
  }
}

/** Connect, handshake, NBD_OPT_GO: a connection in transmission phase (simple replies). */
export async function openTransmission(path: string, name = ""): Promise<{ conn: RawConn; info: ExportInfo }> {
  const conn = await RawConn.connect(path);
  try {
    await handshake(conn);
    const info = await optGo(conn, name);
    return { conn, info };
  } catch (e) {
    conn.destroy();
    throw e;
  }
}

export interface SimpleReply {
  error: number;
  handle: bigint;
}

export async function readSimpleReply(c: RawConn, timeoutMs = 10_000): Promise<SimpleReply> {
  const h = await c.read(16, timeoutMs);
  const magic = h.readUInt32BE(0);
  if (magic !== SIMPLE_REPLY_MAGIC) throw new Error(`bad simple reply magic 0x${magic.toString(16)}`);
  return { error: h.readUInt32BE(4), handle: h.readBigUInt64BE(8) };
}

let nextHandle = 1n;
export function newHandle(): bigint {
  return nextHandle++;
}

/** WRITE and wait for its reply; returns the NBD error (0 = success). */
export async function rawWrite(c: RawConn, offset: number | bigint, data: Buffer, flags = 0): Promise<number> {
  const handle = newHandle();
  c.write(encodeRequest({ type: CMD.WRITE, flags, handle, offset, length: data.length, data }));
  const r = await readSimpleReply(c);
  if (r.handle !== handle) throw new Error(`reply handle ${r.handle} != ${handle}`);
  return r.error;
}

/** READ (simple replies): returns the data, or the NBD error number. */
export async function rawRead(c: RawConn, offset: number | bigint, length: number): Promise<Buffer | number> {
  const handle = newHandle();
  c.write(encodeRequest({ type: CMD.READ, handle, offset, length }));
  const r = await readSimpleReply(c);
  if (r.handle !== handle) throw new Error(`reply handle ${r.handle} != ${handle}`);
  if (r.error !== 0) return r.error;
  return c.read(length);
}

/** NBD_CMD_DISC then close. */
export function rawDisconnect(c: RawConn): void {
  c.write(encodeRequest({ type: CMD.DISC, handle: newHandle(), offset: 0, length: 0 }));
  c.end();
}
