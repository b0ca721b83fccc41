// The server: accepts connections while LISTENING, spawns one connection
// actor per client (stopped again when it finishes: finished children left
// in the snapshot make every later transition slower), and on SHUTDOWN
// tells every connection to drain, stopping once none is left.

import { enqueueActions, fromCallback, setup } from "xstate";

export interface ServerContext {
  nextId: number;
  connections: string[];
  maxConnections: number;
}

export type ServerEvent =
  | { type: "CONNECTION"; socket: unknown; remote: string }
  | { type: "CONNECTION_CLOSED"; id: string }
  | { type: "SHUTDOWN" };

export const serverMachine = setup({
  types: {
    context: {} as ServerContext,
    events: {} as ServerEvent,
    input: {} as { maxConnections?: number },
  },
  actors: {
    /** One client: supplied by the server actor (src/actors/connection.ts). */
    connection: fromCallback<{ type: "SHUTDOWN" }, { id: string; socket: unknown; remote: string }>(() => {}),
    /** The stack's control plane (src/actors/backend.ts), found by connections as "backend". */
    backend: fromCallback(() => {}),
  },
  actions: {
    /** Side effect: stop accepting new connections (close the listeners). */
    stopAccepting: () => {},
    /** Side effect: refuse a connection over the limit. */
    refuseConnection: () => {},
    forgetConnection: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== "CONNECTION_CLOSED") return;
      enqueue.stopChild(event.id);
      enqueue.assign({ connections: context.connections.filter((c) => c !== event.id) });
    }),
  },
  guards: {
    atConnectionLimit: ({ context }) => context.connections.length >= context.maxConnections,
    noConnectionsLeft: ({ context }) => context.connections.length === 0,
  },
}).createMachine({
  id: "server",
  description: "Listeners and connection actors, from listening to stopped.",
  context: ({ input }) => ({ nextId: 1, connections: [], maxConnections: input?.maxConnections ?? Infinity }),
  invoke: { src: "backend", id: "backend", systemId: "backend" },
  initial: "LISTENING",
  states: {
    LISTENING: {
      on: {
        CONNECTION: [
          { guard: "atConnectionLimit", actions: "refuseConnection" },
          {
            actions: enqueueActions(({ context, event, enqueue }) => {
              const id = `conn-${context.nextId}`;
              enqueue.spawnChild("connection", { id, systemId: id, input: { id, socket: event.socket, remote: event.remote } });
              enqueue.assign({ nextId: context.nextId + 1, connections: [...context.connections, id] });
            }),
          },
        ],
        CONNECTION_CLOSED: { actions: "forgetConnection" },
        SHUTDOWN: "SHUTTING_DOWN",
      },
    },
    SHUTTING_DOWN: {
      entry: [
        "stopAccepting",
        enqueueActions(({ context, enqueue }) => {
          for (const id of context.connections) enqueue.sendTo(id, { type: "SHUTDOWN" });
        }),
      ],
      always: { guard: "noConnectionsLeft", target: "STOPPED" },
      on: {
        CONNECTION: { actions: "refuseConnection" },
        CONNECTION_CLOSED: { actions: "forgetConnection" },
      },
    },
    STOPPED: { type: "final" },
  },
});
