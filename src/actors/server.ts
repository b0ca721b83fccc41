// The server actor: listeners (TCP, unix socket, socket activation, stdio)
// feeding the server machine, which spawns a connection actor per client;
// the backend actor answers them. startServer() is what the CLI calls.

import { createActor, type InspectionEvent } from "xstate";
import net from "node:net";
import fs from "node:fs";
import dns from "node:dns/promises";
import path from "node:path";
import { Duplex } from "node:stream";
import { assertProvided } from "../machines/effects.js";
import { serverMachine } from "../machines/server.js";
import type { Stack } from "../backend/stack.js";
import { backendLogic } from "./backend.js";
import { adopt } from "./socket-reader.js";
import { connectionLogic } from "./connection.js";
import { DEFAULT_MAX_IN_FLIGHT_BYTES, type ConnectionStatus } from "./connection-settings.js";
import type { Listener, ServerOptions } from "./server-options.js";
import { tlsServer } from "./tls.js";
import type { OptionRecord } from "../options/record.js";

export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
export const DEFAULT_OPTION_TIMEOUT_MS = 60_000;

export interface RunningServer {
  address: { uri: string; unixSocket?: string; port?: number; host?: string };
  shutdown(): Promise<void>;
  closed: Promise<void>;
  /** Live connections, for the status page. */
  connections(): ConnectionStatus[];
}

export interface StartOptions extends ServerOptions {
  inspect?: (ev: InspectionEvent) => void;
  log?: (msg: string) => void;
  maxConnections?: number;
  /** Options one client may send before it is cut off (default MAX_OPTIONS; tests use a few). */
  maxOptions?: number;
  /** Client flags must arrive within this long (default 10 s, as qemu-nbd's handshake limit). */
  handshakeTimeoutMs?: number;
  /** A client idle this long between options is disconnected (default 60 s). */
  optionTimeoutMs?: number;
  /** How long a shutdown waits for clients in transmission (default 5 s). */
  shutdownGraceMs?: number;
  /** Option records instead of the built-in ones (tests add their own). */
  optionRecords?: readonly OptionRecord[];
  /** Lines always shown (default: the stack's). */
  error?: (msg: string) => void;
}

function stdioDuplex(): Duplex {
  const d = new Duplex({
    read() {
      process.stdin.resume();
    },
    write(chunk, _enc, cb) {
      process.stdout.write(chunk, cb);
    },
    final(cb) {
      process.stdout.end(cb);
    },
  });
  process.stdin.on("data", (c) => {
    if (!d.push(c)) process.stdin.pause();
  });
  process.stdin.on("end", () => d.push(null));
  return d;
}

/**
 * Linux lists listening unix sockets in /proc/net/unix (flag __SO_ACCEPTCON):
 * a live server found there is not disturbed by a probe connection (which
 * it would log as a failed handshake). undefined: not known from there.
 */
function listedAsListening(file: string): boolean | undefined {
  let table: string;
  try {
    table = fs.readFileSync("/proc/net/unix", "utf8");
  } catch {
    return undefined;
  }
  const want = new Set([file, path.resolve(file)]);
  for (const line of table.split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8) continue;
    const p = f.slice(7).join(" ");
    if (want.has(p) && (parseInt(f[3]!, 16) & 0x10000) !== 0) return true;
  }
  return undefined;
}

/** Whether something accepts connections on the unix socket at `file` (ECONNREFUSED: a stale file). */
function socketInUse(file: string): Promise<boolean> {
  if (listedAsListening(file)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const probe = net.connect(file);
    const done = (live: boolean) => {
      probe.removeAllListeners();
      probe.on("error", () => {});
      probe.destroy();
      resolve(live);
    };
    probe.once("connect", () => done(true));
    // ECONNREFUSED (nobody listens) or anything else: not in use by a live server.
    probe.once("error", () => done(false));
    probe.setTimeout(2000, () => done(true));
  });
}

/** A listen error as nbdkit words it: "PATH: Address already in use". */
function unixListenError(file: string, e: NodeJS.ErrnoException): Error {
  const text: Record<string, string> = {
    EADDRINUSE: "Address already in use",
    ENOENT: "No such file or directory",
    EACCES: "Permission denied",
    ENOTDIR: "Not a directory",
    ENAMETOOLONG: "File name too long",
  };
  const err = new Error(`${file}: ${text[e.code ?? ""] ?? e.message}`) as NodeJS.ErrnoException;
  err.code = e.code;
  return err;
}

async function listen(server: net.Server, l: Listener): Promise<void> {
  if (l.kind === "unix") {
    // libuv reports a missing directory as EACCES: say ENOENT, as bind(2) does.
    const dir = path.dirname(l.path);
    if (!fs.existsSync(dir)) throw unixListenError(l.path, Object.assign(new Error(""), { code: "ENOENT" }));
    let st: fs.Stats | undefined;
    try {
      st = fs.lstatSync(l.path);
    } catch {
      /* absent */
    }
    if (st?.isSocket()) {
      // A live server owns it (nbdkit refuses too); a stale file from a killed server is replaced.
      if (await socketInUse(l.path)) throw unixListenError(l.path, Object.assign(new Error(""), { code: "EADDRINUSE" }));
      fs.rmSync(l.path, { force: true });
    }
  }
  let host: string | undefined;
  if (l.kind === "tcp") {
    host = l.host;
    // -4 / -6 with a host name: only addresses of that family.
    if (host !== undefined && l.family !== undefined && net.isIP(host) === 0) {
      host = (await dns.lookup(host, { family: l.family })).address;
    }
    if (host !== undefined && l.family !== undefined && net.isIP(host) !== l.family) {
      throw new Error(`-${l.family}: ${l.host} is not an IPv${l.family} address`);
    }
  }
  await new Promise<void>((resolve, reject) => {
    const fail = (e: NodeJS.ErrnoException) => reject(l.kind === "unix" ? unixListenError(l.path, e) : e);
    server.once("error", fail);
    const done = () => {
      server.off("error", fail);
      resolve();
    };
    if (l.kind === "tcp") {
      // -6: [::] without dual-stack IPv4 (as nbdkit); -4 binds 0.0.0.0.
      server.listen({ port: l.port, host, ipv6Only: l.family === 6 }, done);
    } else if (l.kind === "unix") server.listen(l.path, done);
    else if (l.kind === "activation") server.listen({ fd: l.fds.shift()! }, done);
    else done();
  });
}

export async function startServer(stack: Stack, opts: StartOptions): Promise<RunningServer> {
  const log = opts.log ?? (() => {});
  const registry = new Map<string, () => ConnectionStatus>();
  const servers: net.Server[] = [];
  // One secure context for every connection (throws here on a bad key or
  // certificate). Without credentials (the CLI always has them when TLS is
  // on; in-process tests may not) STARTTLS fails and closes the connection.
  const tls = opts.tls !== "off" && opts.tlsCredentials ? tlsServer(opts.tlsCredentials) : undefined;
  const actor = createActor(
    assertProvided(serverMachine.provide({
      actors: {
        connection: connectionLogic(
          {
            readonly: opts.readonly,
            tls: opts.tls,
            tlsServer: tls,
            maxInFlight: Math.max(1, opts.threads),
            maxInFlightBytes: DEFAULT_MAX_IN_FLIGHT_BYTES,
            workers: opts.workers,
            maxOptions: opts.maxOptions,
            handshakeTimeoutMs: opts.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
            optionTimeoutMs: opts.optionTimeoutMs ?? DEFAULT_OPTION_TIMEOUT_MS,
            shutdownGraceMs: opts.shutdownGraceMs,
            noStructuredReplies: opts.noStructuredReplies,
            noMetaContexts: opts.noMetaContexts,
            maskHandshake: opts.maskHandshake,
            optionRecords: opts.optionRecords,
            inspect: opts.inspect,
            log,
            error: opts.error ?? ((m) => stack.error(m)),
          },
          registry,
        ) as never,
        backend: backendLogic(stack) as never,
      },
      actions: {
        stopAccepting: () => {
          for (const s of servers) s.close();
        },
        refuseConnection: ({ event }) => {
          if (event.type === "CONNECTION") (event.socket as Duplex).destroy();
        },
      },
    })),
    { input: { maxConnections: opts.maxConnections, singleConnection: opts.singleConnection }, inspect: opts.inspect },
  );
  actor.subscribe({ error: (e) => log(`server: ${String(e)}`) });
  actor.start();
  const closed = new Promise<void>((resolve) => {
    actor.subscribe({ complete: () => resolve() });
  });

  let address: RunningServer["address"] = { uri: "nbd://localhost" };
  for (const l of opts.listeners) {
    if (l.kind === "stdio") {
      actor.send({ type: "CONNECTION", socket: stdioDuplex(), remote: "stdio" });
      address = { uri: "" };
      continue;
    }
    const fds = l.kind === "activation" ? [...l.fds] : [];
    for (let i = 0; i < Math.max(1, fds.length); i++) {
      const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (accepted) => {
        const socket = adopt(accepted);
        socket.setNoDelay(true);
        if (l.kind === "tcp" && l.keepalive) socket.setKeepAlive(true);
        actor.send({ type: "CONNECTION", socket, remote: socket.remoteAddress ? `${socket.remoteAddress}:${socket.remotePort}` : "unix" });
      });
      server.on("error", (e) => log(`listener: ${e.message}`));
      await listen(server, l.kind === "activation" ? { kind: "activation", fds: [fds[i]!] } : l);
      servers.push(server);
    }
    if (l.kind === "unix") address = { uri: `nbd+unix:///?socket=${encodeURIComponent(l.path)}`, unixSocket: l.path };
    if (l.kind === "tcp") {
      const a = servers[servers.length - 1]!.address() as net.AddressInfo;
      const host = l.host ?? "localhost";
      address = { uri: `nbd://${host.includes(":") ? `[${host}]` : host}:${a.port}`, port: a.port, host };
    }
  }
  opts.onListening?.();

  let shuttingDown: Promise<void> | null = null;
  return {
    address,
    connections: () => [...registry.values()].map((f) => f()),
    closed,
    shutdown() {
      if (!shuttingDown) {
        actor.send({ type: "SHUTDOWN" });
        shuttingDown = closed.then(() => {
          for (const l of opts.listeners) {
            if (l.kind === "unix") fs.rmSync(l.path, { force: true });
          }
        });
      }
      return shuttingDown;
    },
  };
}
