// STARTTLS: the server side of the upgrade. After NBD_REP_ACK the raw
// socket is wrapped in a server TLSSocket (certificates, or pre-shared keys
// through pskCallback) and the handshake runs; the connection reads and
// writes through the TLS socket from then on. Credentials are loaded once at
// startup (src/cli/tls.ts) and handed down as a TlsCredentials.

import tls from "node:tls";
import type { Duplex } from "node:stream";

/** What the server needs to terminate TLS: certificates or pre-shared keys. */
export type TlsCredentials =
  | {
      kind: "certificates";
      /** Where they were read from (for messages). */
      dir: string;
      key: Buffer;
      cert: Buffer;
      ca: Buffer;
      crl?: Buffer;
      /** --tls-verify-peer: a client certificate signed by ca-cert.pem is required. */
      verifyPeer: boolean;
    }
  | {
      kind: "psk";
      file: string;
      /** identity -> key, as the PSK file lists them. */
      keys: Map<string, Buffer>;
    };

/** A handshake that has not completed by then fails (and the connection closes). */
export const TLS_HANDSHAKE_TIMEOUT_MS = 60_000;

// "PSK ciphers are disabled by default" in Node: list them. The TLS 1.3
// suites come first (GnuTLS clients, i.e. libnbd, negotiate TLS 1.3; PSK
// there needs a SHA-256 suite), then TLS 1.2 PSK suites with forward
// secrecy before plain PSK.
const PSK_CIPHERS = [
  "TLS_AES_128_GCM_SHA256",
  "TLS_AES_256_GCM_SHA384",
  "TLS_CHACHA20_POLY1305_SHA256",
  "ECDHE-PSK-CHACHA20-POLY1305",
  "ECDHE-PSK-AES256-CBC-SHA384",
  "ECDHE-PSK-AES128-CBC-SHA256",
  "DHE-PSK-AES256-GCM-SHA384",
  "DHE-PSK-AES128-GCM-SHA256",
  "DHE-PSK-CHACHA20-POLY1305",
  "PSK-AES256-GCM-SHA384",
  "PSK-AES128-GCM-SHA256",
  "PSK-CHACHA20-POLY1305",
].join(":");

/** One secure context per server: built once, shared by every connection. */
export function secureContext(c: TlsCredentials): tls.SecureContext {
  // The server's order, as GnuTLS (nbdkit) chooses by default: with the
  // client's, libnbd got TLS_CHACHA20_POLY1305_SHA256 where AES-GCM runs
  // on the CPU's AES instructions (TLS-PSK writes were 0.87x nbdkit's rate
  // and reads 1.1x; with AES-GCM 1.45x and 2x, 2026-12-08).
  if (c.kind === "psk") return tls.createSecureContext({ ciphers: PSK_CIPHERS, honorCipherOrder: true, minVersion: "TLSv1.2" });
  return tls.createSecureContext({ key: c.key, cert: c.cert, ca: c.ca, crl: c.crl, honorCipherOrder: true, minVersion: "TLSv1.2" });
}

export interface TlsServer {
  credentials: TlsCredentials;
  context: tls.SecureContext;
}

export function tlsServer(credentials: TlsCredentials): TlsServer {
  return { credentials, context: secureContext(credentials) };
}

/**
 * Why the client's certificate is not acceptable, or null if it is: present
 * and verified against ca-cert.pem (chain, dates, ca-crl.pem) by OpenSSL.
 * A bare server TLSSocket never sets `authorized` nor applies
 * rejectUnauthorized (only tls.Server's secureConnection path does), so this
 * asks the handle for OpenSSL's verdict as tls.Server does, and refuses if
 * it cannot.
 */
export function peerCertificateError(sock: tls.TLSSocket): string | null {
  const cert = sock.getPeerCertificate();
  if (!cert || Object.keys(cert).length === 0) return "no certificate presented";
  const handle = (sock as unknown as { _handle?: { verifyError?: () => Error | null } })._handle;
  if (typeof handle?.verifyError !== "function") return "cannot verify it on this Node.js";
  const e = handle.verifyError();
  if (!e) return null;
  return (e as NodeJS.ErrnoException).code ?? e.message;
}

/** OpenSSL's messages run over several lines and name source files: keep the reason. */
function oneLine(e: Error): string {
  const first = e.message.split("\n")[0]!.trim();
  // "80EC...:error:0A0000C7:SSL routines:tls_process_client_certificate:peer did not return a certificate:../deps/..."
  const m = /:SSL routines:[^:]*:([^:]+)/.exec(first);
  return m ? m[1]! : first;
}

export interface TlsUpgrade {
  /** The TLS socket: attach listeners at once, read and write only once `secure` resolves. */
  socket: tls.TLSSocket;
  /** Resolves once the handshake is done (and, with --tls-verify-peer, the client's certificate checked). */
  secure: Promise<void>;
}

/**
 * Wrap `raw` in a server TLSSocket and start the handshake; `secure`
 * rejects on a failed or timed-out handshake (both sockets are destroyed
 * then). Call it synchronously after writing the ACK, having stopped
 * consuming `raw`'s 'data' and thrown away what it had buffered: bytes the
 * client sent before the upgrade are never plaintext input.
 */
export function upgradeToTls(raw: Duplex, server: TlsServer, timeoutMs = TLS_HANDSHAKE_TIMEOUT_MS): TlsUpgrade {
  const c = server.credentials;
  const verifyPeer = c.kind === "certificates" && c.verifyPeer;
  // Node's TLSSocket honours pskCallback on the server side too; @types/node
  // only declares it for tls.createServer and tls.connect.
  const options: tls.TLSSocketOptions & { pskCallback?: (socket: tls.TLSSocket, identity: string) => Buffer | null } = {
    isServer: true,
    secureContext: server.context,
    requestCert: verifyPeer,
    rejectUnauthorized: verifyPeer,
  };
  if (c.kind === "psk") {
    // An unknown identity gets no key: the handshake fails.
    options.pskCallback = (_socket: tls.TLSSocket, identity: string) => c.keys.get(identity) ?? null;
  }
  const sock = new tls.TLSSocket(raw as never, options);
  const secure = new Promise<void>((resolve, reject) => {
    let done = false;
    const fail = (e: Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      raw.destroy();
      reject(e);
    };
    const timer = setTimeout(() => fail(new Error("TLS handshake timed out")), timeoutMs);
    sock.once("secure", () => {
      if (done) return;
      if (verifyPeer) {
        const refused = peerCertificateError(sock);
        if (refused) {
          fail(new Error(`client certificate refused: ${refused}`));
          return;
        }
      }
      done = true;
      clearTimeout(timer);
      resolve();
    });
    // Both stay attached (no-ops once done): an 'error' is never unhandled.
    sock.on("error", (e) => fail(new Error(`TLS handshake failed: ${oneLine(e)}`)));
    sock.once("close", () => fail(new Error("client closed the connection during the TLS handshake")));
    // A client that goes away after the ACK (before or within its
    // ClientHello) frees the connection at once, not at the timeout: the
    // TLS socket (half-open like the raw one) sees only an 'end' then.
    sock.once("end", () => fail(new Error("client closed the connection during the TLS handshake")));
  });
  return { socket: sock, secure };
}
