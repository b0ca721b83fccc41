// NbdClient: one NBD connection. Option haggling is serialised; in the
// transmission phase any number of requests may be in flight, matched to
// replies by cookie (replies may come back in any order).

import type { Duplex } from "node:stream";
import {
  NBD_REP_ERR_UNSUP,
  BASE_ALLOCATION,
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
  NBD_CMD_DISC,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_INFO_BLOCK_SIZE,
  NBD_OPT_ABORT,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_EXTENDED_HEADERS,
  NBD_CMD_FLAG_PAYLOAD_LEN,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
} from "../protocol/constants.js";
import { type BlockStatusExtent, WireError, encodeOption, writeRequest } from "../protocol/wire.js";
import { NbdDisconnectedError, NbdOptionError, NbdProtocolError } from "./errors.js";
import { type ConnectOptions, type HandshakeOptions, handshake, openStream } from "./handshake.js";
import type { OpenOptions } from "./open-options.js";
import * as opt from "./options.js";
import { RawAccess } from "./raw.js";
import { startTls } from "./tls.js";
import { StreamReader } from "./reader.js";
import { type Pending, type RawReply, ReplyParser } from "./replies.js";

export type Phase = "options" | "transmission" | "closed";

const MAX_U32 = 0xffffffff;

/** Effect lengths: 32 bits, or 64 with extended headers (TRIM, WRITE_ZEROES, CACHE, BLOCK_STATUS). */
function checkRange(count: number, offset: number, wide = false): void {
  if (!Number.isSafeInteger(count) || count < 0 || (!wide && count > MAX_U32)) throw new RangeError(`bad count ${count}`);
  if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`bad offset ${offset}`);
}

export class NbdClient {
  handshakeFlags = 0;
  clientFlags = 0;
  phase: Phase = "options";
  /** The export chosen by go() / exportName(). */
  export?: opt.ExportInfo;
  structuredReplies = false;
  /** NBD_OPT_EXTENDED_HEADERS was acknowledged: 32-byte requests and replies, 64-bit lengths. */
  extendedHeaders = false;
  /** Contexts selected by the last setMetaContext(). */
  metaContexts: opt.MetaContext[] = [];
  /** True once STARTTLS succeeded: the connection is encrypted. */
  tls = false;
  /** Why the connection ended (set once closed). */
  closedError?: Error;
  /** Resolves (never rejects) when the connection is gone. */
  readonly closed: Promise<Error>;
  /** Escape hatch for tests: arbitrary bytes, unchecked requests, raw frames. */
  readonly raw: RawAccess;

  readonly reader: StreamReader;
  readonly pending = new Map<bigint, Pending>();
  readonly parser: ReplyParser;
  private nextCookie = 1n;
  private corked = false;
  private optionLock: Promise<unknown> = Promise.resolve();
  private drainWaiters: (() => void)[] = [];
  private resolveClosed!: (e: Error) => void;
  private readonly channel: opt.OptionChannel;

  private constructor(readonly stream: Duplex) {
    this.closed = new Promise((r) => (this.resolveClosed = r));
    this.reader = new StreamReader(stream, (err) => this.shutdown(err));
    this.parser = new ReplyParser(this.reader.queue, this.pending);
    this.channel = { send: (b) => this.send(b), read: (n) => this.reader.read(n) };
    this.raw = new RawAccess(this);
  }

  /** Connect and complete the initial handshake; the client is then in option haggling. */
  static async connect(target: ConnectOptions | Duplex, opts: HandshakeOptions = {}): Promise<NbdClient> {
    const isStream = typeof (target as Duplex).pipe === "function";
    const o = { ...(isStream ? {} : (target as HandshakeOptions)), ...opts };
    const raw = await openStream(target);
    if (o.tls) return NbdClient.connectTls(raw, o, isStream ? undefined : (target as ConnectOptions));
    const c = new NbdClient(raw);
    let timedOut: Error | undefined;
    const timer = o.timeout
      ? setTimeout(() => c.destroy((timedOut = new NbdDisconnectedError(`NBD handshake timed out after ${o.timeout} ms`))), o.timeout)
      : undefined;
    try {
      const hs = await handshake(c.reader, c.channel.send, o);
      c.handshakeFlags = hs.handshakeFlags;
      c.clientFlags = hs.clientFlags;
      return c;
    } catch (err) {
      c.destroy(err as Error);
      throw timedOut ?? err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Greeting and STARTTLS on the raw stream, then a client over the TLS stream. */
  private static async connectTls(raw: Duplex, o: HandshakeOptions, target?: ConnectOptions): Promise<NbdClient> {
    const host = target && "host" in target ? target.host : undefined;
    const timer = o.timeout ? setTimeout(() => raw.destroy(new NbdDisconnectedError(`NBD handshake timed out after ${o.timeout} ms`)), o.timeout) : undefined;
    try {
      const t = await startTls(raw, { servername: host, ...o.tls! }, o);
      const c = new NbdClient(t.stream);
      c.handshakeFlags = t.handshakeFlags;
      c.clientFlags = t.clientFlags;
      c.tls = t.tls;
      return c;
    } catch (err) {
      raw.destroy();
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Connect and enter transmission: extended headers or structured replies
   * (unless disabled), meta contexts, NBD_OPT_GO; falls back to
   * NBD_OPT_EXPORT_NAME on servers without fixed newstyle or without
   * NBD_OPT_GO.
   */
  static async open(o: OpenOptions): Promise<NbdClient> {
    const c = await NbdClient.connect(o);
    const name = o.exportName ?? "";
    try {
      if (!c.fixedNewstyle) {
        await c.exportName(name);
        return c;
      }
      if (o.structuredReplies !== false) {
        const ext = o.extendedHeaders !== false && (await c.extendedHeadersOption());
        if (!ext) await c.structuredReply();
      }
      if (o.metaContexts?.length && c.structuredReplies) await c.setMetaContext(name, o.metaContexts);
      try {
        await c.go(name, { requestBlockSize: o.requestBlockSize, infoRequests: o.infoRequests });
      } catch (err) {
        if (!(err instanceof NbdOptionError) || err.replyType !== NBD_REP_ERR_UNSUP) throw err;
        await c.exportName(name);
      }
      return c;
    } catch (err) {
      c.destroy(err as Error);
      throw err;
    }
  }

  get fixedNewstyle(): boolean {
    return (this.handshakeFlags & NBD_FLAG_FIXED_NEWSTYLE) !== 0;
  }
  get size(): number {
    return this.export?.size ?? 0;
  }
  get transmissionFlags(): number {
    return this.export?.transmissionFlags ?? 0;
  }
  /** Requests sent and not yet answered. */
  get inFlight(): number {
    return this.pending.size;
  }

  // ---- Option haggling ----------------------------------------------------

  /** Raw option: all reply frames up to the final ACK or error (errors returned, not thrown). */
  option(option: number, payload?: Buffer): Promise<opt.OptionReply[]> {
    return this.exclusive(() => opt.rawOption(this.channel, option, payload));
  }
  list(): Promise<opt.ExportEntry[]> {
    return this.exclusive(() => opt.listExports(this.channel), true);
  }
  /** NBD_OPT_LIST_HIER (experimental): one level of the export tree; NbdOptionError (UNSUP) where the server lacks it. */
  listHier(path = ""): Promise<opt.HierEntry[]> {
    return this.exclusive(() => opt.listHier(this.channel, path), true);
  }
  info(name: string, requests: readonly number[] = []): Promise<opt.ExportInfo> {
    return this.exclusive(() => opt.infoOrGo(this.channel, NBD_OPT_INFO, name, requests), true);
  }
  go(name: string, o: { requestBlockSize?: boolean; infoRequests?: number[] } = {}): Promise<opt.ExportInfo> {
    const req = [...(o.infoRequests ?? [])];
    if (o.requestBlockSize && !req.includes(NBD_INFO_BLOCK_SIZE)) req.push(NBD_INFO_BLOCK_SIZE);
    return this.exclusive(async () => this.enterTransmission(await opt.infoOrGo(this.channel, NBD_OPT_GO, name, req)), true);
  }
  /** NBD_OPT_EXPORT_NAME (works without fixed newstyle); the server hangs up on failure. */
  exportName(name: string): Promise<opt.ExportInfo> {
    const noZeroes = (this.clientFlags & NBD_FLAG_C_NO_ZEROES) !== 0;
    return this.exclusive(async () => this.enterTransmission(await opt.exportNameOption(this.channel, name, noZeroes)));
  }
  /**
   * NBD_OPT_EXTENDED_HEADERS: true if acknowledged (structured replies are
   * then implied), false on any error reply (a server without them).
   */
  extendedHeadersOption(): Promise<boolean> {
    return this.exclusive(async () => {
      const frames = await opt.rawOption(this.channel, NBD_OPT_EXTENDED_HEADERS);
      const ok = frames[frames.length - 1].type === NBD_REP_ACK;
      if (ok) {
        this.extendedHeaders = true;
        this.structuredReplies = true;
        this.parser.extended = true;
      }
      return ok;
    }, true);
  }
  /** NBD_OPT_STRUCTURED_REPLY: true if acknowledged, false on any error reply. */
  structuredReply(): Promise<boolean> {
    return this.exclusive(async () => {
      const frames = await opt.rawOption(this.channel, NBD_OPT_STRUCTURED_REPLY);
      const ok = frames[frames.length - 1].type === NBD_REP_ACK;
      if (ok) this.structuredReplies = true;
      return ok;
    }, true);
  }
  listMetaContext(exportName: string, queries: readonly string[] = []): Promise<opt.MetaContext[]> {
    return this.exclusive(() => opt.metaContext(this.channel, NBD_OPT_LIST_META_CONTEXT, exportName, queries), true);
  }
  setMetaContext(exportName: string, queries: readonly string[]): Promise<opt.MetaContext[]> {
    return this.exclusive(async () => {
      this.metaContexts = await opt.metaContext(this.channel, NBD_OPT_SET_META_CONTEXT, exportName, queries);
      return this.metaContexts;
    }, true);
  }
  /** NBD_OPT_ABORT, then close (a server that hangs up without replying is fine). */
  async abort(): Promise<void> {
    await this.exclusive(async () => {
      this.send(encodeOption(NBD_OPT_ABORT));
      await opt.readOptionReply(this.channel, NBD_OPT_ABORT).catch(() => undefined);
    }).catch((err) => {
      if (!(err instanceof NbdDisconnectedError)) throw err;
    });
    await this.end();
  }

  private exclusive<T>(fn: () => Promise<T>, needFixed = false): Promise<T> {
    const run = this.optionLock.then(async () => {
      if (this.phase !== "options") throw this.closedError ?? new Error(`not in option haggling (phase ${this.phase})`);
      if (needFixed && !this.fixedNewstyle) throw new Error("server is not fixed newstyle: only exportName() is possible");
      try {
        return await fn();
      } catch (err) {
        if (err instanceof NbdProtocolError || err instanceof WireError) this.destroy(err);
        throw err;
      }
    });
    this.optionLock = run.catch(() => undefined);
    return run;
  }

  private enterTransmission(info: opt.ExportInfo): opt.ExportInfo {
    this.export = info;
    this.phase = "transmission";
    this.reader.setSink(() => this.onReplyData());
    return info;
  }

  // ---- Transmission -------------------------------------------------------

  pread(count: number, offset: number, flags = 0): Promise<Buffer> {
    checkRange(count, offset);
    return this.submit(NBD_CMD_READ, flags, offset, count, undefined, undefined, count);
  }
  /** The buffer is written as is (no copy): do not modify it until this resolves. */
  pwrite(buf: Buffer, offset: number, flags = 0): Promise<void> {
    checkRange(buf.length, offset);
    return this.submit(NBD_CMD_WRITE, flags, offset, buf.length, buf);
  }
  flush(flags = 0): Promise<void> {
    return this.submit(NBD_CMD_FLUSH, flags, 0, 0);
  }
  trim(count: number, offset: number, flags = 0): Promise<void> {
    checkRange(count, offset, this.extendedHeaders);
    return this.submit(NBD_CMD_TRIM, flags, offset, count);
  }
  /** NBD_CMD_WRITE_ZEROES; flags NO_HOLE, FAST_ZERO, FUA. */
  zero(count: number, offset: number, flags = 0): Promise<void> {
    checkRange(count, offset, this.extendedHeaders);
    return this.submit(NBD_CMD_WRITE_ZEROES, flags, offset, count);
  }
  cache(count: number, offset: number, flags = 0): Promise<void> {
    checkRange(count, offset, this.extendedHeaders);
    return this.submit(NBD_CMD_CACHE, flags, offset, count);
  }
  /** Block status for every selected context, by context id. */
  blockStatusAll(count: number, offset: number, flags = 0): Promise<Map<number, BlockStatusExtent[]>> {
    checkRange(count, offset, this.extendedHeaders);
    return this.submit(NBD_CMD_BLOCK_STATUS, flags, offset, count);
  }
  /** base:allocation extents (or those of the only selected context). */
  async blockStatus(count: number, offset: number, flags = 0): Promise<BlockStatusExtent[]> {
    const all = await this.blockStatusAll(count, offset, flags);
    const base = this.metaContexts.find((m) => m.name === BASE_ALLOCATION);
    const extents = base ? all.get(base.id) : all.size === 1 ? [...all.values()][0] : undefined;
    if (!extents) throw new NbdProtocolError("no base:allocation extents in the block status reply");
    return extents;
  }

  /** Wait for requests in flight, send NBD_CMD_DISC, close. In option haggling: abort(). */
  async disconnect(): Promise<void> {
    if (this.phase === "options") return this.abort();
    if (this.phase !== "transmission") return;
    while (this.pending.size > 0 && this.phase === "transmission") {
      await new Promise<void>((r) => this.drainWaiters.push(r));
    }
    if (this.phase !== "transmission") return;
    const h = Buffer.allocUnsafe(this.extendedHeaders ? 32 : 28);
    writeRequest(h, 0, 0, NBD_CMD_DISC, this.nextCookie++, 0, 0, this.extendedHeaders);
    this.send(h);
    await this.end();
  }

  /** Hard close: every request in flight fails with err (or a generic error). */
  destroy(err?: Error): void {
    this.shutdown(err ?? new NbdDisconnectedError("NBD connection closed by the client"));
    this.stream.destroy();
  }

  private async end(): Promise<void> {
    this.stream.end();
    const t = setTimeout(() => this.destroy(), 5000);
    t.unref?.();
    await this.closed;
    clearTimeout(t);
  }

  /** Send a request; resolves with the parsed result (or RawReply when raw is given). */
  submit(type: number, flags: number, offset: number | bigint, count: number, payload?: Buffer, raw?: RawReply, dataLength = 0, cookie?: bigint): Promise<any> {
    if (this.phase !== "transmission") {
      return Promise.reject(this.closedError ?? new Error(`not in transmission phase (phase ${this.phase})`));
    }
    const c = cookie ?? this.nextCookie++;
    const ext = this.extendedHeaders;
    const h = Buffer.allocUnsafe(ext ? 32 : 28);
    // Extended headers: "NBD_CMD_WRITE MUST use the flag NBD_CMD_FLAG_PAYLOAD_LEN".
    const f = ext && payload ? flags | NBD_CMD_FLAG_PAYLOAD_LEN : flags;
    writeRequest(h, 0, f, type, c, offset, count, ext);
    return new Promise((resolve, reject) => {
      this.pending.set(c, { type, offset: Number(offset), count, resolve, reject, raw, simpleDataLength: dataLength, covered: 0 });
      this.send(h, payload);
    });
  }

  /** Queue bytes; everything sent in one tick goes out in one writev. */
  send(a: Buffer, b?: Buffer): void {
    if (this.phase === "closed") return;
    if (!this.corked) {
      this.corked = true;
      this.stream.cork();
      process.nextTick(this.uncork);
    }
    this.stream.write(a);
    if (b && b.length > 0) this.stream.write(b);
  }
  private uncork = (): void => {
    this.corked = false;
    this.stream.uncork();
  };

  private onReplyData(): void {
    try {
      this.parser.parse();
    } catch (err) {
      this.destroy(err as Error);
      return;
    }
    if (this.pending.size === 0 && this.drainWaiters.length) this.wakeDrain();
  }
  private wakeDrain(): void {
    const w = this.drainWaiters;
    this.drainWaiters = [];
    for (const r of w) r();
  }

  /** Connection gone: fail everything in flight, once. */
  private shutdown(err: Error): void {
    if (this.phase === "closed") return;
    this.phase = "closed";
    this.closedError = err;
    const n = this.pending.size;
    const e = n > 0 && err instanceof NbdDisconnectedError ? new NbdDisconnectedError(`${err.message} (${n} request${n === 1 ? "" : "s"} in flight)`, { cause: err }) : err;
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) p.reject(e);
    this.wakeDrain();
    this.resolveClosed(err);
  }
}
