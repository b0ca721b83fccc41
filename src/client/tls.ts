// STARTTLS, the client side: after the greeting, NBD_OPT_STARTTLS; on
// NBD_REP_ACK the raw socket is handed to a node:tls client socket
// (X.509: the server's certificate checked against a CA and its name;
// or a pre-shared key), and option haggling goes on inside TLS.

import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { userInfo } from "node:os";
import { join } from "node:path";
import type { Duplex } from "node:stream";
import tls from "node:tls";
import { NBD_FLAG_C_FIXED_NEWSTYLE, NBD_OPT_STARTTLS, NBD_REP_ACK } from "../protocol/constants.js";
import { encodeOption } from "../protocol/wire.js";
import { NbdOptionError, NbdProtocolError, replyName } from "./errors.js";
import { type ClientTls, type HandshakeOptions, handshake } from "./handshake.js";
import { readOptionReply } from "./options.js";
import { StreamReader } from "./reader.js";

export type { ClientTls } from "./handshake.js";

// PSK suites are off by default in Node: list them (TLS 1.3 first, as GnuTLS servers prefer).
const PSK_CIPHERS = [
  "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
  "ECDHE-PSK-CHACHA20-POLY1305", "ECDHE-PSK-AES256-CBC-SHA384", "ECDHE-PSK-AES128-CBC-SHA256",
  "DHE-PSK-AES256-GCM-SHA384", "DHE-PSK-AES128-GCM-SHA256", "PSK-AES256-GCM-SHA384", "PSK-AES128-GCM-SHA256",
].join(":");

export interface TlsStart {
  stream: Duplex;
  handshakeFlags: number;
  clientFlags: number;
  /** True if the stream is now TLS. */
  tls: boolean;
}

function oneLine(e: Error): string {
  const first = e.message.split("\n")[0]!.trim();
  const m = /:SSL routines:[^:]*:([^:]+)/.exec(first);
  return m ? m[1]! : first;
}

/**
 * The greeting and STARTTLS on a raw stream. Returns the stream to go on
 * with: the TLS socket, or (mode "on", server refused) the raw one.
 */
export async function startTls(raw: Duplex, o: ClientTls, hs: HandshakeOptions): Promise<TlsStart> {
  let closed: Error | undefined;
  const reader = new StreamReader(raw, (e) => (closed = e));
  const detach = () => {
    for (const ev of ["data", "end", "close", "error"]) raw.removeAllListeners(ev);
  };
  const { handshakeFlags, clientFlags } = await handshake(reader, (b) => raw.write(b), hs);
  const ch = { send: (b: Buffer) => void raw.write(b), read: (n: number) => reader.read(n) };
  const plain = (why: string): TlsStart => {
    if (o.mode === "require") throw new Error(`TLS required, but ${why}`);
    detach();
    return { stream: raw, handshakeFlags, clientFlags, tls: false };
  };
  if (!(clientFlags & NBD_FLAG_C_FIXED_NEWSTYLE)) return plain("the server is not fixed newstyle (no STARTTLS)");
  ch.send(encodeOption(NBD_OPT_STARTTLS));
  const reply = await readOptionReply(ch, NBD_OPT_STARTTLS);
  if (reply.type !== NBD_REP_ACK) {
    if (reply.type < 0x80000000) throw new NbdProtocolError(`unexpected ${replyName(reply.type)} in reply to NBD_OPT_STARTTLS`);
    if (o.mode === "require") throw new NbdOptionError(NBD_OPT_STARTTLS, reply.type, `the server refused TLS${reply.data.length ? `: ${reply.data.toString("utf8")}` : ""}`);
    return plain("the server refused it");
  }
  if (closed) throw closed;
  detach();
  const verify = o.verify !== false;
  const name = o.servername;
  const options: tls.ConnectionOptions = {
    socket: raw as never,
    minVersion: "TLSv1.2",
    rejectUnauthorized: verify && !o.psk,
  };
  if (o.psk) {
    const psk = o.psk;
    options.ciphers = PSK_CIPHERS;
    options.pskCallback = () => ({ psk: psk.key, identity: psk.identity });
    options.checkServerIdentity = () => undefined;
  } else {
    if (o.ca) options.ca = o.ca;
    if (o.cert) options.cert = o.cert;
    if (o.key) options.key = o.key;
    // SNI takes names only; the certificate is checked against IPs too.
    if (name && !isIP(name)) options.servername = name;
    options.checkServerIdentity = name && verify ? (_h, cert) => tls.checkServerIdentity(name, cert) : () => undefined;
  }
  const sock = tls.connect(options);
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => fail(new Error("TLS handshake timed out")), o.timeoutMs ?? 30_000);
    const fail = (e: Error) => {
      clearTimeout(t);
      sock.destroy();
      reject(new Error(`TLS handshake with the server failed: ${oneLine(e)}`));
    };
    sock.once("secureConnect", () => {
      clearTimeout(t);
      sock.off("error", fail);
      resolve();
    });
    sock.once("error", fail);
  });
  return { stream: sock, handshakeFlags, clientFlags, tls: true };
}

export interface TlsFiles {
  mode: "on" | "require";
  /** A directory as libnbd reads it: ca-cert.pem, and optionally client-cert.pem + client-key.pem. */
  certificates?: string;
  /** A PSK file ("identity:hexkey" lines, as psktool writes). */
  pskFile?: string;
  /** The PSK identity to use from the file (default: the local user name). */
  username?: string;
  verify?: boolean;
  servername?: string;
}

/** ClientTls from libnbd-style files; throws a one-line Error naming a bad file. */
export function clientTlsFromFiles(f: TlsFiles): ClientTls {
  const read = (path: string, optional = false): Buffer | undefined => {
    try {
      return readFileSync(path);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (optional && code === "ENOENT") return undefined;
      throw new Error(`cannot read ${path}: ${code === "ENOENT" ? "no such file" : code ?? (e as Error).message}`);
    }
  };
  const out: ClientTls = { mode: f.mode, verify: f.verify, servername: f.servername };
  if (f.pskFile !== undefined) {
    const user = f.username ?? localUser();
    const text = read(f.pskFile)!.toString("utf8");
    for (const line of text.split(/\r?\n/)) {
      const i = line.lastIndexOf(":");
      if (i <= 0 || line.startsWith("#")) continue;
      if (line.slice(0, i) !== user) continue;
      const hex = line.slice(i + 1).trim();
      if (!/^([0-9a-fA-F]{2})+$/.test(hex)) throw new Error(`${f.pskFile}: the key of ${user} is not hexadecimal`);
      out.psk = { identity: user, key: Buffer.from(hex, "hex") };
      break;
    }
    if (!out.psk) throw new Error(`${f.pskFile}: no key for user '${user}' (set the user with tls-username=)`);
    return out;
  }
  if (f.certificates !== undefined) {
    out.ca = read(join(f.certificates, "ca-cert.pem"));
    const cert = read(join(f.certificates, "client-cert.pem"), true);
    const key = read(join(f.certificates, "client-key.pem"), true);
    if ((cert === undefined) !== (key === undefined)) {
      throw new Error(`${f.certificates}: client-cert.pem and client-key.pem go together`);
    }
    if (cert && key) {
      out.cert = cert;
      out.key = key;
    }
  }
  return out;
}

function localUser(): string {
  try {
    return userInfo().username;
  } catch {
    return process.env.USER ?? "";
  }
}
