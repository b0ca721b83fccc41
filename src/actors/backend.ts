// The backend actor: the stack's control plane as messages. Connection
// actors ask it to list exports, resolve the default export, open and
// close contexts; it answers each request with BACKEND_REPLY. The data
// path never comes here: an OPEN reply hands over the context itself.

import { fromCallback, type AnyActorRef } from "xstate";
import type { Opened } from "../backend/chain.js";
import type { Stack } from "../backend/stack.js";
import type { ConnectionInfo, ExportEntry, ListParams, PeerInfo } from "../backend/types.js";
import type { OptionsBackend } from "../options/record.js";

export type BackendRequest =
  | { type: "PRECONNECT"; id: number; replyTo: AnyActorRef; readonly: boolean; peer: PeerInfo }
  | { type: "LIST_EXPORTS"; id: number; replyTo: AnyActorRef; params: ListParams }
  | { type: "DEFAULT_EXPORT"; id: number; replyTo: AnyActorRef; params: ListParams }
  | { type: "OPEN"; id: number; replyTo: AnyActorRef; readonly: boolean; exportName: string; tls: boolean; connection?: ConnectionInfo }
  | { type: "CLOSE"; id: number; replyTo: AnyActorRef; opened: Opened; finalize: boolean }
  | { type: "META_CONTEXTS"; id: number; replyTo: AnyActorRef; exportName: string };

export type BackendReply = { type: "BACKEND_REPLY"; id: number; ok: boolean; value?: unknown; error?: unknown };

export const backendLogic = (stack: Stack) =>
  fromCallback<BackendRequest>(({ receive }) => {
    receive((ev) => {
      let p: Promise<unknown>;
      switch (ev.type) {
        case "PRECONNECT":
          p = stack.preconnect(ev.readonly, ev.peer);
          break;
        case "LIST_EXPORTS":
          p = stack.listExports(ev.params);
          break;
        case "DEFAULT_EXPORT":
          p = stack.defaultExport(ev.params);
          break;
        case "OPEN":
          p = stack.open(ev.readonly, ev.exportName, ev.tls, ev.connection);
          break;
        case "CLOSE":
          p = stack.close(ev.opened, ev.finalize);
          break;
        case "META_CONTEXTS":
          p = stack.metaContexts(ev.exportName);
          break;
      }
      p.then(
        (value) => ev.replyTo.send({ type: "BACKEND_REPLY", id: ev.id, ok: true, value } satisfies BackendReply),
        (error: unknown) => ev.replyTo.send({ type: "BACKEND_REPLY", id: ev.id, ok: false, error } satisfies BackendReply),
      );
    });
  });

/** The connection's side: turns request/reply messages into promises. */
export class BackendMessenger implements OptionsBackend {
  private nextId = 1;
  private pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();

  constructor(
    private readonly backend: AnyActorRef,
    private readonly self: AnyActorRef,
    /** The client this messenger speaks for, handed to open. */
    private readonly connection?: ConnectionInfo,
  ) {}

  /** Feed BACKEND_REPLY events received by the connection actor. */
  receive(r: BackendReply): void {
    const p = this.pending.get(r.id);
    if (!p) return;
    this.pending.delete(r.id);
    if (r.ok) p.resolve(r.value);
    else p.reject(r.error);
  }

  private ask<T>(req: Record<string, unknown> & { type: BackendRequest["type"] }): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.backend.send({ ...req, id, replyTo: this.self });
    });
  }

  preconnect(readonly: boolean, peer: PeerInfo) {
    return this.ask<void>({ type: "PRECONNECT", readonly, peer });
  }
  listExports(params: ListParams) {
    return this.ask<ExportEntry[]>({ type: "LIST_EXPORTS", params });
  }
  defaultExport(params: ListParams) {
    return this.ask<string | null>({ type: "DEFAULT_EXPORT", params });
  }
  open(readonly: boolean, exportName: string, tls: boolean) {
    return this.ask<Opened>({ type: "OPEN", readonly, exportName, tls, connection: this.connection });
  }
  close(opened: Opened, finalize: boolean) {
    return this.ask<void>({ type: "CLOSE", opened, finalize });
  }
  metaContexts(exportName: string) {
    return this.ask<string[]>({ type: "META_CONTEXTS", exportName });
  }
}
