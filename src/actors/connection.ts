// The connection actor: one per client. Runs handshake -> options ->
// transmission for its socket, asking the backend actor (by message) for
// listings and contexts, and tells the server when it is finished.

import { fromCallback, type AnyActorRef, type InspectionEvent } from "xstate";
import type { Duplex } from "node:stream";
import type { TlsMode } from "../machines/options.js";
import * as C from "../protocol/constants.js";
import { errorMessage } from "../backend/errors.js";
import type { ConnectionInfo } from "../backend/types.js";
import { phaseMachine, isRootActor } from "../status/actors.js";
import { BackendMessenger, type BackendReply } from "./backend.js";
import { ByteQueue } from "./byte-queue.js";
import { negotiate } from "./negotiation.js";
import { peerOf } from "./peer.js";
import { upgradeToTls, type TlsServer } from "./tls.js";
import { Transmission } from "./transmission.js";

export interface ConnectionSettings {
  readonly: boolean;
  tls: TlsMode;
  /** Certificates or PSK keys, loaded at startup; required unless tls is "off". */
  tlsServer?: TlsServer;
  maxInFlight: number;
  maxInFlightBytes: number;
  /** Options one client may send before it is cut off (default MAX_OPTIONS). */
  maxOptions?: number;
  handshakeTimeoutMs?: number;
  optionTimeoutMs?: number;
  inspect?: (ev: InspectionEvent) => void;
  log: (msg: string) => void;
}

export interface ConnectionInput {
  id: string;
  socket: Duplex;
  remote: string;
}

/** What the status page shows of a live connection. */
export interface ConnectionStatus {
  id: string;
  remote: string;
  phase: string;
  exportName?: string;
  inFlight: number;
  bytesRead: number;
  bytesWritten: number;
  /** With inspection on: the machine of the current phase (handshake, options, transmission) and its state. */
  machine?: string;
  state?: string;
}

export function connectionLogic(settings: ConnectionSettings, registry: Map<string, () => ConnectionStatus>) {
  return fromCallback<{ type: "SHUTDOWN" } | BackendReply, ConnectionInput>(({ input, receive, self, system, sendBack }) => {
    const { socket, id } = input;
    const backend = system.get("backend") as AnyActorRef;
    const queue = new ByteQueue();
    let tx: Transmission | null = null;
    let phase = "handshake";
    let exportName: string | undefined;
    let finished = false;
    let negotiating = true;
    /** Where the connection reads and writes: the raw socket, after STARTTLS the TLS socket over it. */
    let stream: Duplex = socket;
    const peer = peerOf(socket);
    let tlsUp = false;
    const connection: ConnectionInfo = {
      id,
      peer,
      acceptedAt: Date.now(),
      get tls() {
        return tlsUp;
      },
      disconnect(force) {
        if (!force && tx) return tx.shutdown();
        stream.destroy();
        socket.destroy();
      },
    };
    const messenger = new BackendMessenger(backend, self, connection);

    // With inspection on, remember this connection's latest phase actor (for the status page).
    let phaseActor: AnyActorRef | undefined;
    const outer = settings.inspect;
    const inspect = outer && ((ev: InspectionEvent) => {
      if (ev.type === "@xstate.actor" && isRootActor(ev.actorRef)) phaseActor = ev.actorRef as AnyActorRef;
      outer(ev);
    });

    registry.set(id, () => ({
      ...(phaseActor ? phaseMachine(phaseActor) : {}),
      id,
      remote: input.remote,
      phase: tx ? tx.phase : phase,
      exportName,
      inFlight: tx?.inFlight ?? 0,
      bytesRead: tx?.bytesRead.value ?? 0,
      bytesWritten: tx?.bytesWritten.value ?? 0,
    }));

    const finish = () => {
      if (finished) return;
      finished = true;
      registry.delete(id);
      stream.destroy();
      socket.destroy();
      sendBack({ type: "CONNECTION_CLOSED", id });
    };

    const onData = (chunk: Buffer) => {
      queue.push(chunk);
      tx?.pump();
    };
    const onEnd = () => {
      queue.end();
      // Half-close: nothing more will arrive, but replies still owed go out.
      if (tx) tx.inputEnded();
      else if (!negotiating) stream.end();
    };
    const onError = (e: Error) => settings.log(`${id}: ${e.message}`);
    const onClose = () => {
      queue.end();
      if (tx) tx.clientClosed();
      // While negotiating, the EOF reaches negotiate(), which cleans up first.
      else if (!negotiating) finish();
    };
    const attach = (s: Duplex) => {
      s.on("data", onData);
      s.on("end", onEnd);
      s.on("error", onError);
      s.on("close", onClose);
    };
    attach(socket);

    // STARTTLS, called synchronously right after the ACK is written: stop
    // reading the raw socket, throw away every byte the client sent before
    // the upgrade (never plaintext input: the STARTTLS injection class of
    // bug), wrap the socket in TLS and read and write through that.
    const tlsServer = settings.tlsServer;
    const startTls = tlsServer
      ? (): Promise<Duplex> => {
          socket.off("data", onData);
          socket.off("end", onEnd);
          socket.off("close", onClose);
          queue.clear();
          if (socket.destroyed) return Promise.reject(new Error("client closed the connection before the TLS handshake"));
          const up = upgradeToTls(socket, tlsServer);
          stream = up.socket;
          // Errors during the handshake are upgradeToTls's (they fail it, logged below).
          up.socket.on("data", onData);
          up.socket.on("end", onEnd);
          up.socket.on("close", onClose);
          return up.secure.then(
            () => {
              tlsUp = true;
              up.socket.on("error", onError);
              return up.socket;
            },
            (e: unknown) => {
              settings.log(`${id}: ${errorMessage(e)}`);
              throw e;
            },
          );
        }
      : undefined;

    receive((ev) => {
      if (ev.type === "BACKEND_REPLY") messenger.receive(ev);
      else if (ev.type === "SHUTDOWN") {
        if (tx) tx.shutdown();
        else {
          stream.destroy();
          socket.destroy();
        }
      }
    });

    // preconnect runs before the greeting: a refusal closes the socket unseen.
    messenger
      .preconnect(settings.readonly, peer)
      .then(() => negotiate(socket, queue, messenger, {
      readonly: settings.readonly,
      tls: settings.tls,
      maxOptions: settings.maxOptions,
      handshakeTimeoutMs: settings.handshakeTimeoutMs,
      optionTimeoutMs: settings.optionTimeoutMs,
      inspect,
      onPhase: (p) => (phase = p),
      startTls,
    }))
      .then((neg) => {
        negotiating = false;
        if (!neg) {
          phase = "closed";
          stream.end();
          finish();
          return;
        }
        exportName = neg.info.name;
        tx = new Transmission(stream, queue, neg, {
          maxInFlight: settings.maxInFlight,
          maxInFlightBytes: settings.maxInFlightBytes,
          inspect,
          log: (m) => settings.log(`${id}: ${m}`),
          onClosed: (fin) => {
            const closed = messenger.close(neg.opened, fin).catch((e) => settings.log(`${id}: close: ${errorMessage(e)}`));
            // After the transmission has ended the socket (it does once this settles).
            void closed.finally(() => setImmediate(finish));
            return closed;
          },
        });
        if (stream.destroyed) tx.clientClosed();
        else {
          tx.pump();
          if (queue.ended) tx.inputEnded();
        }
      })
      .catch((e: unknown) => {
        negotiating = false;
        settings.log(`${id}: ${e instanceof Error && process.env.NBDSTATE_DEBUG ? e.stack : errorMessage(e)}`);
        finish();
      });

    return () => {
      registry.delete(id);
      if (!stream.destroyed) stream.destroy();
      if (!socket.destroyed) socket.destroy();
    };
  });
}

export const DEFAULT_MAX_IN_FLIGHT_BYTES = 4 * C.MAX_REQUEST_SIZE;
