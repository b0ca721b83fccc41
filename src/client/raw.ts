// The raw escape hatch, for tests that poke a server with bad input:
// arbitrary bytes, unchecked requests, raw reply frames, raw reads.

import { NBD_CMD_READ } from "../protocol/constants.js";
import { encodeRequest } from "../protocol/wire.js";
import type { OptionReply } from "./options.js";
import type { StreamReader } from "./reader.js";
import type { RawReply, ReplyFrame } from "./replies.js";

/** What RawAccess needs of the client (NbdClient has it; named here so raw.ts need not import client.ts). */
export interface RawTarget {
  readonly extendedHeaders: boolean;
  readonly reader: StreamReader;
  readonly parser: { tap?: (f: ReplyFrame) => void };
  readonly closed: Promise<Error>;
  send(head: Buffer, payload?: Buffer): void;
  submit(type: number, flags: number, offset: number | bigint, count: number, payload: Buffer | undefined, raw: RawReply, dataLength: number, cookie?: bigint): Promise<RawReply>;
  option(option: number, payload?: Buffer): Promise<OptionReply[]>;
}

/** A request sent as given: no range, flag or phase checks beyond being connected. */
export interface RawRequest {
  type: number;
  flags?: number;
  offset?: number | bigint;
  /** The header's length field (for WRITE it need not match payload). */
  length?: number;
  /** Default: the client's next cookie. */
  cookie?: bigint;
  /** Bytes sent right after the header. */
  payload?: Buffer;
  /** Bytes a successful simple reply carries (default: length for READ, else 0). */
  replyDataLength?: number;
}

export class RawAccess {
  private frameWaiters: ((f: ReplyFrame) => void)[] = [];

  constructor(private readonly client: RawTarget) {}

  /** Write arbitrary bytes to the server. */
  writeRaw(buf: Buffer): void {
    this.client.send(buf);
  }

  /** Send a request unchecked; resolves with every frame of its reply, NBD errors included. */
  request(r: RawRequest): Promise<RawReply> {
    const length = r.length ?? r.payload?.length ?? 0;
    const dataLength = r.replyDataLength ?? (r.type === NBD_CMD_READ ? length : 0);
    const raw: RawReply = { error: 0, frames: [] };
    return this.client.submit(r.type, r.flags ?? 0, r.offset ?? 0, length, r.payload, raw, dataLength, r.cookie);
  }

  /** Send a request header (+ payload) expecting no reply (e.g. NBD_CMD_DISC, or bad input). */
  send(r: RawRequest): void {
    const h = encodeRequest(r.flags ?? 0, r.type, r.cookie ?? 0n, r.offset ?? 0, r.length ?? r.payload?.length ?? 0, this.client.extendedHeaders);
    this.client.send(h, r.payload);
  }

  /** The next reply frame parsed (any cookie). Only frames parsed after the call are seen. */
  nextFrame(): Promise<ReplyFrame> {
    return new Promise((resolve) => {
      this.frameWaiters.push(resolve);
      this.client.parser.tap = (f) => {
        const w = this.frameWaiters;
        this.frameWaiters = [];
        if (w.length === 0) this.client.parser.tap = undefined;
        for (const fn of w) fn(f);
      };
    });
  }

  /** Raw option exchange (same as client.option). */
  option(option: number, payload?: Buffer): Promise<OptionReply[]> {
    return this.client.option(option, payload);
  }

  /**
   * Read exactly n bytes from the server. In the transmission phase this
   * detaches the reply parser for good: later replies must be read raw.
   */
  read(n: number): Promise<Buffer> {
    this.client.reader.setSink(undefined);
    return this.client.reader.read(n);
  }

  /** Resolves when the server has closed the connection (or it failed). */
  waitClosed(): Promise<Error> {
    return this.client.closed;
  }
}
