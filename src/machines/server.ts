// The server: accepts connections while LISTENING, spawns one connection
// actor per client (stopped again when it finishes: finished children left
// in the snapshot make every later transition slower), and on SHUTDOWN
// tells every connection to drain, stopping once none is left.

import { assign, enqueueActions, setup, stopChild } from "xstate";
import { declaredAction, declaredActor } from "./effects.js";

export interface ServerContext {
  nextId: number;
  connections: string[];
  maxConnections: number;
  /** -s: serve one connection, then stop. */
  single: boolean;
}

export type ServerEvent =
  | { type: "CONNECTION"; socket: unknown; remote: string }
  | { type: "CONNECTION_CLOSED"; id: string }
  | { type: "SHUTDOWN" };

export const serverMachine = setup({
  types: {
    context: {} as ServerContext,
    events: {} as ServerEvent,
    input: {} as { maxConnections?: number; singleConnection?: boolean },
  },
  actors: {
    /** One client: supplied by the server actor (src/actors/connection.ts). */
    connection: declaredActor<{ id: string; socket: unknown; remote: string }>("connection"),
    /** The stack's control plane (src/actors/backend.ts), found by connections as "backend". */
    backend: declaredActor("backend"),
  },
  actions: {
    /** Side effect: stop accepting new connections (close the listeners). */
    stopAccepting: declaredAction("stopAccepting"),
    /** Side effect: refuse a connection over the limit. */
    refuseConnection: declaredAction("refuseConnection"),
    // Built-in actions, not enqueueActions: a connection's CONNECTION_CLOSED
    // arrives from inside that actor's own action, where xstate's development
    // build warns about an enqueued assign (thousands of lines in the tests).
    stopConnection: stopChild(({ event }) => (event as Extract<ServerEvent, { type: "CONNECTION_CLOSED" }>).id),
    forgetConnection: assign({
      connections: ({ context, event }) => context.connections.filter((c) => c !== (event as Extract<ServerEvent, { type: "CONNECTION_CLOSED" }>).id),
    }),
  },
  guards: {
    atConnectionLimit: ({ context }) =>
      context.connections.length >= context.maxConnections || (context.single && context.nextId > 1),
    /** -s: the one connection has gone. */
    singleConnectionDone: ({ context }) => context.single,
    noConnectionsLeft: ({ context }) => context.connections.length === 0,
  },
}).createMachine({
  id: "server",
  description: "Listeners and connection actors, from listening to stopped.",
  context: ({ input }) => ({
    nextId: 1,
    connections: [],
    maxConnections: input?.maxConnections ?? Infinity,
    single: input?.singleConnection ?? false,
  }),
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
        CONNECTION_CLOSED: [
          { guard: "singleConnectionDone", target: "SHUTTING_DOWN", actions: ["stopConnection", "forgetConnection"] },
          { actions: ["stopConnection", "forgetConnection"] },
        ],
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
        CONNECTION_CLOSED: { actions: ["stopConnection", "forgetConnection"] },
      },
    },
    STOPPED: { type: "final" },
  },
});
