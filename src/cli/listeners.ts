// Where the server listens, decided as nbdkit does, and the NBD URI that
// --run hands to its command.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Listener } from "../actors/server-options.js";
import { DEFAULT_PORT, type CliArgs, type TlsMode } from "./args.js";
import { CliError } from "./errors.js";

export interface ListenerPlan {
  listeners: Listener[];
  /** systemd socket activation is in use (implies foreground). */
  activation: boolean;
  /** A private socket must be made (-U -, or --run without -p/-U). */
  privateUnix: boolean;
}

/** File descriptors passed by systemd, if LISTEN_PID names this process. */
export function activationFds(env: NodeJS.ProcessEnv, pid: number): number[] {
  if (env.LISTEN_PID === undefined || env.LISTEN_FDS === undefined) return [];
  if (Number(env.LISTEN_PID) !== pid) return [];
  const n = Number(env.LISTEN_FDS);
  if (!Number.isInteger(n) || n <= 0) return [];
  return Array.from({ length: n }, (_, i) => 3 + i);
}

/** Pure: which listeners the arguments (and environment) ask for. */
export function planListeners(a: CliArgs, env: NodeJS.ProcessEnv, pid: number): ListenerPlan {
  const fds = activationFds(env, pid);
  if (fds.length > 0) {
    if (a.port !== undefined || a.unix !== undefined || a.single || a.ipaddr !== undefined) {
      throw new CliError("cannot use socket activation with -i, -p, -s or -U options");
    }
    return { listeners: [{ kind: "activation", fds }], activation: true, privateUnix: false };
  }
  if (a.single) return { listeners: [{ kind: "stdio" }], activation: false, privateUnix: false };
  if (a.unix === "-") return { listeners: [], activation: false, privateUnix: true };
  if (a.unix !== undefined) {
    return { listeners: [{ kind: "unix", path: a.unix }], activation: false, privateUnix: false };
  }
  if (a.port === undefined && a.run !== undefined) {
    // A captive server needs no public port: use a private socket.
    return { listeners: [], activation: false, privateUnix: true };
  }
  // -4 / -6 as nbdkit: only that family (an IPv6 socket without dual-stack
  // IPv4 for -6); -i with a host name binds its address of that family.
  const host = a.ipaddr ?? (a.ipFamily === 4 ? "0.0.0.0" : a.ipFamily === 6 ? "::" : undefined);
  const tcp: Extract<Listener, { kind: "tcp" }> = { kind: "tcp", port: a.port ?? DEFAULT_PORT };
  if (host !== undefined) tcp.host = host;
  if (a.ipFamily !== undefined) tcp.family = a.ipFamily;
  if (a.keepalive) tcp.keepalive = true;
  return { listeners: [tcp], activation: false, privateUnix: false };
}

/** A fresh private directory holding the socket path; remove() deletes it. */
export function makePrivateSocket(): { path: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), "nbdstate"));
  return {
    path: join(dir, "socket"),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** Percent-encode as nbdkit's uri_quote: keep A-Z a-z 0-9 - . _ ~ and '/'. */
export function uriQuote(s: string): string {
  let out = "";
  for (const byte of Buffer.from(s, "utf8")) {
    const c = String.fromCharCode(byte);
    if (/[A-Za-z0-9\-._~/]/.test(c)) out += c;
    else out += "%" + byte.toString(16).toUpperCase().padStart(2, "0");
  }
  return out;
}

/**
 * The URI printed once listening (-v): nbdkit's form, the socket path
 * quoted as uri_quote does (so '/' stays), and no encoding a client would
 * have to undo: nbd+unix:///?socket=/tmp/s.sock, nbd://localhost:10809.
 */
export function listeningUri(where: { unixSocket?: string; port?: number; host?: string; uri: string }): string {
  if (where.unixSocket !== undefined) return `nbd+unix:///?socket=${uriQuote(where.unixSocket)}`;
  if (where.port !== undefined) {
    const h = where.host === undefined || where.host === "0.0.0.0" || where.host === "::" ? "localhost" : where.host;
    return `nbd://${h.includes(":") ? `[${h}]` : h}:${where.port}`;
  }
  return where.uri;
}

/** The URI --run publishes (nbdkit's form: localhost for TCP, nbds with --tls=require). */
export function nbdUri(
  where: { unixSocket?: string; port?: number },
  exportName: string,
  tls: TlsMode,
): string | undefined {
  const s = tls === "require" ? "s" : "";
  const exp = exportName === "" ? "" : "/" + uriQuote(exportName);
  if (where.unixSocket !== undefined) return `nbd${s}+unix://${exp}?socket=${uriQuote(where.unixSocket)}`;
  if (where.port !== undefined) return `nbd${s}://localhost:${where.port}${exp}`;
  return undefined;
}
