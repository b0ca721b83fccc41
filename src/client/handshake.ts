// Opening the transport and the initial handshake (greeting, client flags).

import net from "node:net";
import type { Duplex } from "node:stream";
import {
  IHAVEOPT,
  NBD_DEFAULT_PORT,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NBDMAGIC,
} from "../protocol/constants.js";
import { decodeGreeting } from "../protocol/wire.js";
import { NbdProtocolError } from "./errors.js";
import type { StreamReader } from "./reader.js";

/** Where to connect: a unix socket, a TCP address, or an already open stream. */
export type ConnectTarget = { path: string } | { host: string; port?: number } | { socket: Duplex };

/** Handshake knobs (defaults: use whatever the server offers). */
export interface HandshakeOptions {
  /** Reply NBD_FLAG_C_FIXED_NEWSTYLE if offered (default true). */
  fixedNewstyle?: boolean;
  /** Reply NBD_FLAG_C_NO_ZEROES if offered (default true). */
  noZeroes?: boolean;
  /** Send exactly these client flags instead (tests). */
  clientFlags?: number;
  /** Give up if the greeting has not arrived within this many ms (default: wait). */
  timeout?: number;
  /** STARTTLS right after the greeting (see ClientTls). */
  tls?: ClientTls;
}

export type ConnectOptions = ConnectTarget & HandshakeOptions;

/** Open (or adopt) the byte stream described by target. */
export async function openStream(target: ConnectTarget | Duplex): Promise<Duplex> {
  if (typeof (target as Duplex).pipe === "function") return target as Duplex;
  const t = target as ConnectTarget;
  if ("socket" in t) return t.socket;
  const sock = "path" in t ? net.connect({ path: t.path }) : net.connect({ host: t.host, port: t.port ?? NBD_DEFAULT_PORT });
  await new Promise<void>((resolve, reject) => {
    const fail = (err: Error) => reject(err);
    sock.once("error", fail);
    sock.once("connect", () => {
      sock.off("error", fail);
      resolve();
    });
  });
  if (!("path" in t)) sock.setNoDelay(true);
  return sock;
}

/** Read the greeting and send client flags; rejects on bad magic or oldstyle. */
export async function handshake(
  reader: StreamReader,
  send: (b: Buffer) => void,
  opts: HandshakeOptions,
): Promise<{ handshakeFlags: number; clientFlags: number }> {
  let head = await reader.read(16);
  if (head.readBigUInt64BE(0) === NBDMAGIC && head.readBigUInt64BE(8) === IHAVEOPT) {
    head = Buffer.concat([head, await reader.read(2)]);
  }
  let greeting;
  try {
    greeting = decodeGreeting(head);
  } catch (err) {
    throw new NbdProtocolError(`NBD handshake failed: ${(err as Error).message}`);
  }
  if (greeting.style === "oldstyle") {
    throw new NbdProtocolError("NBD handshake failed: server uses oldstyle negotiation, which is not supported");
  }
  const f = greeting.flags;
  let clientFlags = opts.clientFlags;
  if (clientFlags === undefined) {
    clientFlags = 0;
    if (f & NBD_FLAG_FIXED_NEWSTYLE && opts.fixedNewstyle !== false) clientFlags |= NBD_FLAG_C_FIXED_NEWSTYLE;
    if (f & NBD_FLAG_NO_ZEROES && opts.noZeroes !== false) clientFlags |= NBD_FLAG_C_NO_ZEROES;
  }
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(clientFlags >>> 0, 0);
  send(b);
  return { handshakeFlags: f, clientFlags };
}

export interface ClientTls {
  /** "require": fail unless TLS is up; "on": fall back to plaintext if the server refuses it. */
  mode: "on" | "require";
  /** CA certificates to verify the server with (default: Node's trusted roots). */
  ca?: Buffer | string;
  /** A client certificate and its key, for servers that ask for one. */
  cert?: Buffer | string;
  key?: Buffer | string;
  /** Verify the server's certificate and name (default true). */
  verify?: boolean;
  /** The name the certificate must carry (the host connected to; none for unix sockets: chain only). */
  servername?: string;
  /** Pre-shared key authentication instead of certificates. */
  psk?: { identity: string; key: Buffer };
  /** Handshake time limit, ms (default 30 s). */
  timeoutMs?: number;
}
