// --inspect=ws://HOST:PORT: every actor's events and snapshots streamed to
// an XState inspector endpoint (a WebSocket relay such as
// @statelyai/inspect's createInspectorServer, or any server that reads its
// JSON messages) with @statelyai/inspect's createWebSocketInspector.
//
// Events and contexts hold live objects (sockets, buffers, actor refs):
// they are reduced to plain, bounded data here, before the inspector walks
// them. Only the three kinds of event the inspector protocol carries are
// passed on (@xstate.actor, @xstate.event, @xstate.snapshot).

import { createWebSocketInspector } from "@statelyai/inspect";
import type { AnyEventObject, InspectionEvent, MachineContext, Snapshot } from "xstate";
import { plain, plainEvent, type InspectFn } from "./actors.js";

export interface WebSocketInspect {
  inspect: InspectFn;
  /** Stop once the events already handed over are sent. */
  stop(): Promise<void>;
}

/** Events kept while the endpoint is not (yet) connected; the oldest are dropped first. */
const MAX_DEFERRED = 5000;

function plainSnapshot(s: Snapshot<unknown>): Snapshot<unknown> {
  const o = s as Snapshot<unknown> & { value?: unknown; context?: unknown };
  const out: Record<string, unknown> = { status: o.status };
  if (o.value !== undefined) out.value = o.value;
  if (o.context !== undefined) out.context = plain(o.context);
  if (o.output !== undefined) out.output = plain(o.output);
  if (o.error !== undefined) out.error = plain(o.error);
  return out as unknown as Snapshot<unknown>;
}

export function webSocketInspect(url: string): WebSocketInspect {
  const inspector = createWebSocketInspector({
    url,
    maxDeferredEvents: MAX_DEFERRED,
    sanitizeEvent: (e: AnyEventObject) => plainEvent(e),
    sanitizeContext: (c: MachineContext) => plain(c) as MachineContext,
  });
  return {
    inspect: (ev: InspectionEvent) => {
      switch (ev.type) {
        case "@xstate.actor":
          inspector.inspect.next?.(ev);
          return;
        case "@xstate.event":
          inspector.inspect.next?.({ ...ev, event: plainEvent(ev.event) });
          return;
        case "@xstate.snapshot":
          // Copied now: the inspector serializes later, when the snapshot may have moved on.
          inspector.inspect.next?.({ ...ev, event: plainEvent(ev.event), snapshot: plainSnapshot(ev.snapshot) });
          return;
        default:
          return;
      }
    },
    stop: async () => {
      // The inspector converts and sends on a later tick (setTimeout 0).
      await new Promise((r) => setTimeout(r, 20));
      inspector.stop();
    },
  };
}
