// The server actor: listeners (TCP, unix socket, socket activation, stdio)
// feeding the server machine, which spawns a connection actor per client;
// the backend actor answers them. startServer() is what the CLI calls.

import { createActor, type InspectionEvent } from "xstate";
import net from "node:net";
import fs from "node:fs";
import { Duplex } from "node:stream";
import { serverMachine } from "../machines/server.js";
import type { Stack } from "../backend/stack.js";
import { backendLogic } from "./backend.js";
import { connectionLogic, DEFAULT_MAX_IN_FLIGHT_BYTES, type ConnectionStatus } from "./connection.js";
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

function listen(server: net.Server, l: Listener): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    const done = () => {
      server.off("error", reject);
      resolve();
    };
    if (l.kind === "tcp") server.listen({ port: l.port, host: l.host }, done);
    else if (l.kind === "unix") {
      // A stale socket file from a killed server would make listen fail.
      try {
        if (fs.statSync(l.path).isSocket()) fs.unlinkSync(l.path);
      } catch {
        /* absent */
      }
      server.listen(l.path, done);
    } else if (l.kind === "activation") server.listen({ fd: l.fds.shift()! }, done);
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
    serverMachine.provide({
      actors: {
        connection: connectionLogic(
          {
            readonly: opts.readonly,
            tls: opts.tls,
            tlsServer: tls,
            maxInFlight: Math.max(1, opts.threads),
            maxInFlightBytes: DEFAULT_MAX_IN_FLIGHT_BYTES,
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
    }),
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
      const server = net.createServer({ allowHalfOpen: true }, (socket) => {
        socket.setNoDelay(true);
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
