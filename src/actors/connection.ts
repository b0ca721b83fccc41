// The connection actor: one per client. It runs the connection machine
// (src/machines/connection.ts, provided once per server in
// connection-effects.ts) for its socket, with this connection's effects:
// the backend by message (preconnect, list, open, close), the handshake's
// and options' IO, the transmission loop, STARTTLS, and the socket's
// teardown. It tells the server when it is done.

import { createActor, fromCallback, type Actor, type AnyActorRef } from "xstate";
import type net from "node:net";
import type { Duplex } from "node:stream";
import { errorMessage } from "../backend/errors.js";
import type { ConnectionInfo } from "../backend/types.js";
import type { connectionMachine } from "../machines/connection.js";
import { SystemScopes } from "../machines/effects.js";
import type { TransmissionEvent } from "../machines/transmission.js";
import { BackendMessenger, type BackendReply } from "./backend.js";
import { readerOf } from "./socket-reader.js";
import { ByteQueue } from "./byte-queue.js";
import { providedConnectionMachine, type ConnectionEffects } from "./connection-effects.js";
import { negotiationOf, type Wire } from "./negotiation.js";
import { peerOf } from "./peer.js";
import { upgradeToTls } from "./tls.js";
import { Transmission } from "./transmission.js";
import type { Negotiated, RemoteLoop, TransmissionLoop } from "./transmission-loop.js";
import type { ConnectionInput, ConnectionSettings, ConnectionStatus } from "./connection-settings.js";
import { trimSoon } from "../sys/trim.js";

/** Request failures logged per connection per second at most; the rest are counted. */
const FAILURES_PER_SECOND = 5;
const DEFAULT_FLUSH_TIMEOUT_MS = 30_000;

export function connectionLogic(settings: ConnectionSettings, registry: Map<string, () => ConnectionStatus>) {
  const scopes = new SystemScopes<ConnectionEffects>("connection");
  const machine = providedConnectionMachine(settings, scopes);
  return fromCallback<{ type: "SHUTDOWN" } | BackendReply, ConnectionInput>((args) => {
    // A connection that cannot even start is one line and one closed
    // socket; the server and its other connections go on.
    try {
      return run(args);
    } catch (e) {
      settings.error(`${args.input.id}: ${errorMessage(e)}`);
      (args.input.socket as Duplex).destroy();
      args.sendBack({ type: "CONNECTION_CLOSED", id: args.input.id });
      return () => {};
    }
  });

  function run({ input, receive, self, system, sendBack }: Parameters<Parameters<typeof fromCallback<{ type: "SHUTDOWN" } | BackendReply, ConnectionInput>>[0]>[0]): () => void {
    const { socket, id } = input;
    const backend = system.get("backend") as AnyActorRef;
    const queue = new ByteQueue();
    let tx: TransmissionLoop | null = null;
    /** Set when a worker thread serves the transmission (it owns the socket then). */
    let remote: RemoteLoop | null = null;
    let finished = false;
    /** Where the connection reads and writes: the raw socket, after STARTTLS the TLS socket over it. */
    let stream: Duplex = socket;
    const peer = peerOf(socket);
    let tlsUp = false;
    const acceptedAt = Date.now();
    const connection: ConnectionInfo = {
      id,
      peer,
      acceptedAt,
      get tls() {
        return tlsUp;
      },
      disconnect(force) {
        if (!force && actor.getSnapshot().value === "TRANSMISSION") actor.send({ type: "SHUTDOWN" });
        else {
          stream.destroy();
          socket.destroy();
        }
      },
    };
    const messenger = new BackendMessenger(backend, self, connection);
    const wire: Wire = { queue, stream: () => stream, write: (b) => void stream.write(b) };

    // Failed requests: one line each, at most a few a second (the rest counted, then summed up).
    let window = 0;
    let inWindow = 0;
    let suppressed = 0;
    const failed = (command: string, e: unknown) => {
      const now = Math.floor(Date.now() / 1000);
      if (now !== window) {
        if (suppressed > 0) settings.error(`${id}: ${suppressed} more failed requests`);
        window = now;
        inWindow = 0;
        suppressed = 0;
      }
      if (++inWindow <= FAILURES_PER_SECOND) settings.error(`${id}: ${command}: ${errorMessage(e)}`);
      else suppressed++;
    };

    // ---- the socket
    const onData = (chunk: Buffer) => {
      queue.push(chunk);
      tx?.data();
    };
    const onEnd = () => {
      queue.end();
      // Half-close: nothing more will arrive, but replies still owed go out.
      tx?.inputEnded();
    };
    const onError = (e: Error) => settings.log(`${id}: ${e.message}`);
    const onClose = () => {
      queue.end();
      tx?.clientClosed();
      if (actor.getSnapshot().status === "active") actor.send({ type: "CLIENT_CLOSED" });
    };
    const attach = (s: Duplex) => {
      const reader = readerOf(s);
      if (reader) {
        // Read into the server's own buffers (socket-reader.ts), no 'data' events.
        reader.sink = { bytes: onData, holds: (b) => queue.holds(b) };
        s.resume();
      } else s.on("data", onData);
      s.on("end", onEnd);
      s.on("error", onError);
      s.on("close", onClose);
    };
    attach(socket);

    // STARTTLS, called right after the ACK is queued: stop reading the raw
    // socket, throw away every byte the client sent before the upgrade
    // (never plaintext input: the STARTTLS injection class of bug), wrap
    // the socket in TLS and read and write through that.
    const tlsServer = settings.tlsServer;
    const startTls = tlsServer
      ? (): Promise<void> => {
          socket.off("data", onData);
          const reader = readerOf(socket);
          if (reader) reader.sink = null;
          socket.off("end", onEnd);
          socket.off("close", onClose);
          queue.clear();
          if (socket.destroyed) return Promise.reject(new Error("client closed the connection before the TLS handshake"));
          const up = upgradeToTls(socket, tlsServer);
          stream = up.socket;
          // Errors during the handshake are upgradeToTls's (they fail it, logged below);
          // a client that goes away during it frees the connection at once.
          up.socket.on("data", onData);
          up.socket.on("end", onEnd);
          up.socket.on("close", onClose);
          return up.secure.then(
            () => {
              tlsUp = true;
              up.socket.on("error", onError);
            },
            (e: unknown) => {
              settings.log(`${id}: ${errorMessage(e)}`);
              throw e;
            },
          );
        }
      : undefined;

    const negotiatedOf = (): Negotiated => {
      const n = actor.getSnapshot().context.negotiated!;
      const style = n.extendedHeaders ? "extended headers" : n.structuredReplies ? "structured replies" : "simple replies";
      const contexts = n.metaContexts.map((m) => m.name).join(", ");
      settings.log(`${id}: export '${n.chosen!.info.name}': ${style}${contexts ? `, ${contexts}` : ""}${tlsUp ? ", TLS" : ""}`);
      return { opened: n.chosen!.opened, info: n.chosen!.info, structuredReplies: n.structuredReplies, extendedHeaders: n.extendedHeaders, metaContexts: n.metaContexts };
    };

    /**
     * A plain socket's transmission may move to a worker thread (the
     * workers say whether this one does): from then on the worker reads
     * and writes the socket, and `remote` stands in for the loop.
     */
    const handOff = (n: Negotiated): boolean => {
      const w = settings.workers;
      if (!w || stream !== socket || tlsUp || !readerOf(socket) || socket.destroyed) return false;
      const ctx = n.opened.ctx;
      const r = w.handOff({
        id, socket: socket as net.Socket, queue, exportName: ctx.exportName, readonly: ctx.readonly, info: n.info,
        structuredReplies: n.structuredReplies, extendedHeaders: n.extendedHeaders, metaContexts: n.metaContexts,
        maxInFlight: settings.maxInFlight, maxInFlightBytes: settings.maxInFlightBytes,
        emit: (ev) => {
          const child = actor.getSnapshot().children.transmission as AnyActorRef | undefined;
          child?.send(ev);
        },
        failed: (command, message) => failed(command, new Error(message)),
        log: (m) => settings.log(`${id}: ${m}`),
        closed: onClose,
      });
      if (!r) return false;
      remote = r;
      settings.log(`${id}: served by a worker thread`);
      return true;
    };

    // ---- the effects the machines name, for this connection
    const emit = (ev: TransmissionEvent) => {
      const child = actor.getSnapshot().children.transmission as AnyActorRef | undefined;
      // Outside the machine's own transition (the loop may report from inside an effect).
      queueMicrotask(() => child?.send(ev));
    };
    const effects: ConnectionEffects = {
      negotiation: negotiationOf(wire, {
        backend: {
          listExports: (p) =>
            messenger.listExports(p).catch((e: unknown) => {
              settings.error(`${id}: list exports: ${errorMessage(e)}`);
              throw e;
            }),
          defaultExport: (p) => messenger.defaultExport(p),
          open: (ro, name, tls) =>
            messenger.open(ro, name, tls).catch((e: unknown) => {
              // Every failed open is worth a line on the server's log (the client gets it too).
              settings.error(`${id}: open '${name.slice(0, 256)}': ${errorMessage(e)}`);
              throw e;
            }),
          close: (o, fin) => messenger.close(o, fin),
          metaContexts: (name) => messenger.metaContexts(name),
        },
        readonly: settings.readonly,
        get noZeroes(): boolean {
          return actor.getSnapshot().context.noZeroes;
        },
        startTls,
        log: (m) => settings.log(`${id}: ${m}`),
      }),
      preconnect: () => messenger.preconnect(settings.readonly, peer),
      startServing: () => {
        const neg = negotiatedOf();
        if (handOff(neg)) {
          tx = remote;
          queueMicrotask(() => remote!.start());
          return;
        }
        const loop = (tx = new Transmission(stream, queue, neg, {
          maxInFlight: settings.maxInFlight,
          maxInFlightBytes: settings.maxInFlightBytes,
          log: (m) => settings.log(`${id}: ${m}`),
          failed,
          emit,
        }, readerOf(stream)));
        if (stream.destroyed) {
          loop.clientClosed();
          emit({ type: "CLIENT_CLOSED" });
          return;
        }
        // Requests the client pipelined behind NBD_OPT_GO are already queued.
        queueMicrotask(() => {
          loop.start();
          if (queue.ended) loop.inputEnded();
        });
      },
      refuseRequests: () => tx?.refuse(),
      stopReading: () => tx?.stopReading(),
      awaitReplies: () => tx?.awaitReplies() ?? Promise.resolve(),
      awaitQuiet: () => tx?.awaitQuiet() ?? Promise.resolve(),
      closeExport: async (finalize) => {
        const n = actor.getSnapshot().context.negotiated;
        if (!n?.chosen) return;
        await messenger.close(n.chosen.opened, finalize).catch((e) => settings.log(`${id}: close: ${errorMessage(e)}`));
      },
      flushSocket: () =>
        new Promise<void>((resolve) => {
          tx?.finish();
          if (remote) return void remote.flushAndEnd(settings.flushTimeoutMs ?? DEFAULT_FLUSH_TIMEOUT_MS).then(resolve);
          if (stream.destroyed || stream.writableFinished) return resolve();
          // A client that never reads the last replies does not hold the connection for ever.
          const t = setTimeout(resolve, settings.flushTimeoutMs ?? DEFAULT_FLUSH_TIMEOUT_MS);
          const done = () => {
            clearTimeout(t);
            resolve();
          };
          stream.once("finish", done);
          stream.once("close", done);
          stream.end();
        }),
      destroySocket: () => finish(),
      logEnd: () => {
        const r = actor.getSnapshot().context.reason;
        if (r) settings.log(`${id}: closed: ${r}`);
      },
    };

    const actor: Actor<typeof connectionMachine> = createActor(machine, {
      input: {
        options: {
          maxOptions: settings.maxOptions,
          tls: settings.tls,
          noStructuredReplies: settings.noStructuredReplies,
          noMetaContexts: settings.noMetaContexts,
        },
      },
      inspect: settings.inspect,
      id,
    });
    scopes.set(actor.system, effects);
    actor.subscribe({ error: (e: unknown) => {
      settings.error(`${id}: ${errorMessage(e)}`);
      finish();
    } });

    function finish(): void {
      if (finished) return;
      finished = true;
      registry.delete(id);
      remote?.destroy();
      stream.destroy();
      socket.destroy();
      sendBack({ type: "CONNECTION_CLOSED", id });
      // What this connection's buffers took goes back to the system.
      trimSoon(() => registry.size > 0);
    }

    registry.set(id, () => {
      const snap = actor.getSnapshot();
      const phase = String(snap.value);
      const child = (snap.children as Record<string, AnyActorRef | undefined>)[phase.toLowerCase()];
      const childState = child ? String((child.getSnapshot() as { value?: unknown }).value ?? "") : undefined;
      const n = snap.context.negotiated;
      return {
        id,
        remote: input.remote,
        phase: childState ? `${phase}/${childState}` : phase,
        machine: child ? phase.toLowerCase() : "connection",
        state: childState ?? phase,
        exportName: n?.chosen?.info.name,
        inFlight: tx?.inFlight ?? 0,
        bytesRead: tx?.bytesRead.value ?? 0,
        bytesWritten: tx?.bytesWritten.value ?? 0,
        requests: tx?.requests ?? 0,
        errors: tx?.errors ?? 0,
        acceptedAt,
      };
    });

    receive((ev) => {
      if (ev.type === "BACKEND_REPLY") messenger.receive(ev);
      else if (ev.type === "SHUTDOWN" && actor.getSnapshot().status === "active") actor.send({ type: "SHUTDOWN" });
    });

    actor.start();

    return () => {
      registry.delete(id);
      actor.stop();
      if (!stream.destroyed) stream.destroy();
      if (!socket.destroyed) socket.destroy();
    };
  }
}
