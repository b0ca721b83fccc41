// Every transition and guard of serverMachine, through a real actor whose
// connection and backend actors are stubs and whose side effects are spies.
import { describe, expect, it } from "vitest";
import { createActor, fromCallback } from "xstate";
import { NbdClient } from "../../src/client/index.js";
import { serverMachine } from "../../src/machines/server.js";
import { handshake, RawConn } from "../helpers/raw.js";
import { spied } from "./actor-table.js";
import { startInProcess } from "./inproc.js";
import { candidates } from "./table.js";

interface Child {
  input: { id: string; socket: unknown; remote: string };
  received: string[];
  stopped: boolean;
}

function harness(maxConnections?: number, singleConnection?: boolean) {
  const log: string[] = [];
  const extra: Record<string, unknown[]> = {};
  const children = new Map<string, Child>();
  let backendStarted = 0;
  const m = spied(serverMachine, log, extra).provide({
    actors: {
      connection: fromCallback<{ type: "SHUTDOWN" }, Child["input"]>(({ input, receive }) => {
        const c: Child = { input, received: [], stopped: false };
        children.set(input.id, c);
        receive((ev) => c.received.push(ev.type));
        return () => {
          c.stopped = true;
        };
      }) as never,
      backend: fromCallback(() => {
        backendStarted++;
      }) as never,
    },
  });
  const actor = createActor(m, { input: { maxConnections, singleConnection } });
  actor.subscribe({ error: () => {} });
  actor.start();
  const connect = (n = 1) => {
    for (let i = 0; i < n; i++) actor.send({ type: "CONNECTION", socket: { n: i }, remote: `peer${i}` });
  };
  return { actor, log, extra, children, connect, backendStarted: () => backendStarted };
}

/** The (state, event, guard) candidates the tests below exercise, by name. */
const covered = [
  "LISTENING CONNECTION []",
  "LISTENING CONNECTION [atConnectionLimit]",
  "LISTENING CONNECTION_CLOSED []",
  "LISTENING CONNECTION_CLOSED [singleConnectionDone]",
  "LISTENING SHUTDOWN []",
  "SHUTTING_DOWN CONNECTION []",
  "SHUTTING_DOWN CONNECTION_CLOSED []",
  "SHUTTING_DOWN always [noConnectionsLeft]",
];

describe("serverMachine", () => {
  it("the tests cover every transition and guard of the machine", () => {
    expect([...covered].sort()).toEqual(candidates(serverMachine));
  });

  it("starts LISTENING with the backend invoked as system actor 'backend'", () => {
    const h = harness();
    const s = h.actor.getSnapshot();
    expect(s.value).toBe("LISTENING");
    expect(s.context).toEqual({ nextId: 1, connections: [], maxConnections: Infinity, single: false });
    expect(harness(4, true).actor.getSnapshot().context).toEqual({ nextId: 1, connections: [], maxConnections: 4, single: true });
    expect(h.backendStarted()).toBe(1);
    expect(h.actor.system.get("backend")).toBeDefined();
  });

  it("LISTENING + CONNECTION: spawns a connection actor with id, socket and remote", () => {
    const h = harness();
    h.connect(2);
    const s = h.actor.getSnapshot();
    expect(s.context).toMatchObject({ nextId: 3, connections: ["conn-1", "conn-2"] });
    expect(Object.keys(s.children).sort()).toEqual(["backend", "conn-1", "conn-2"]);
    expect(h.children.get("conn-2")!.input).toEqual({ id: "conn-2", socket: { n: 1 }, remote: "peer1" });
    expect(h.actor.system.get("conn-1")).toBeDefined();
    expect(h.log).toEqual([]);
  });

  it("LISTENING + CONNECTION [atConnectionLimit]: refused, nothing spawned", () => {
    const h = harness(1);
    h.connect(2);
    const s = h.actor.getSnapshot();
    expect(s.context).toMatchObject({ nextId: 2, connections: ["conn-1"] });
    expect(h.log).toEqual(["refuseConnection"]);
    const [{ args }] = h.extra.refuseConnection as { args: { event: { socket: unknown } } }[];
    expect(args.event.socket).toEqual({ n: 1 });
    expect(h.children.size).toBe(1);
  });

  it("LISTENING + CONNECTION_CLOSED: the child is stopped and forgotten; the limit frees up", () => {
    const h = harness(1);
    h.connect();
    h.actor.send({ type: "CONNECTION_CLOSED", id: "conn-1" });
    let s = h.actor.getSnapshot();
    expect(s.value).toBe("LISTENING");
    expect(s.context.connections).toEqual([]);
    expect(Object.keys(s.children)).toEqual(["backend"]);
    expect(h.children.get("conn-1")!.stopped).toBe(true);
    h.connect();
    s = h.actor.getSnapshot();
    expect(s.context.connections).toEqual(["conn-2"]);
    expect(h.log).toEqual([]);
  });

  it("an unknown CONNECTION_CLOSED id changes nothing", () => {
    const h = harness();
    h.connect();
    h.actor.send({ type: "CONNECTION_CLOSED", id: "conn-9" });
    expect(h.actor.getSnapshot().context.connections).toEqual(["conn-1"]);
    expect(h.children.get("conn-1")!.stopped).toBe(false);
  });

  it("LISTENING + SHUTDOWN: stops accepting and tells every connection to drain", () => {
    const h = harness();
    h.connect(2);
    h.actor.send({ type: "SHUTDOWN" });
    const s = h.actor.getSnapshot();
    expect(s.value).toBe("SHUTTING_DOWN");
    expect(h.log).toEqual(["stopAccepting"]);
    expect(h.children.get("conn-1")!.received).toEqual(["SHUTDOWN"]);
    expect(h.children.get("conn-2")!.received).toEqual(["SHUTDOWN"]);
  });

  it("SHUTTING_DOWN + CONNECTION: refused", () => {
    const h = harness();
    h.connect();
    h.actor.send({ type: "SHUTDOWN" });
    h.connect();
    expect(h.log).toEqual(["stopAccepting", "refuseConnection"]);
    expect(h.actor.getSnapshot().context.connections).toEqual(["conn-1"]);
  });

  it("SHUTTING_DOWN + CONNECTION_CLOSED: forgets it; stops with the last one [noConnectionsLeft]", () => {
    const h = harness();
    h.connect(2);
    h.actor.send({ type: "SHUTDOWN" });
    h.actor.send({ type: "CONNECTION_CLOSED", id: "conn-2" });
    let s = h.actor.getSnapshot();
    expect(s.value).toBe("SHUTTING_DOWN");
    expect(s.context.connections).toEqual(["conn-1"]);
    expect(h.children.get("conn-2")!.stopped).toBe(true);
    h.actor.send({ type: "CONNECTION_CLOSED", id: "conn-1" });
    s = h.actor.getSnapshot();
    expect(s.value).toBe("STOPPED");
    expect(s.status).toBe("done");
    expect(h.children.get("conn-1")!.stopped).toBe(true);
  });

  it("SHUTDOWN with no connection: STOPPED at once [noConnectionsLeft]", () => {
    const h = harness();
    h.actor.send({ type: "SHUTDOWN" });
    expect(h.actor.getSnapshot().value).toBe("STOPPED");
    expect(h.actor.getSnapshot().status).toBe("done");
    expect(h.log).toEqual(["stopAccepting"]);
  });

  // -s (nbdkit's --single): "serve one connection, then exit".
  it("-s: LISTENING + CONNECTION [atConnectionLimit]: a second client is refused while the first is served", () => {
    const h = harness(undefined, true);
    h.connect(2);
    const s = h.actor.getSnapshot();
    expect(s.context).toMatchObject({ nextId: 2, connections: ["conn-1"] });
    expect(h.children.size).toBe(1);
    expect(h.log).toEqual(["refuseConnection"]);
    const [{ args }] = h.extra.refuseConnection as { args: { event: { socket: unknown } } }[];
    expect(args.event.socket).toEqual({ n: 1 });
  });

  it("-s: LISTENING + CONNECTION_CLOSED [singleConnectionDone]: the one connection gone, the server stops", () => {
    const h = harness(undefined, true);
    h.connect();
    h.actor.send({ type: "CONNECTION_CLOSED", id: "conn-1" });
    const s = h.actor.getSnapshot();
    expect(s.value).toBe("STOPPED");
    expect(s.status).toBe("done");
    expect(h.children.get("conn-1")!.stopped).toBe(true);
    expect(s.context.connections).toEqual([]);
    expect(h.log).toEqual(["stopAccepting"]);
  });

  it("without -s, the last connection closing does not stop the server", () => {
    const h = harness();
    h.connect();
    h.actor.send({ type: "CONNECTION_CLOSED", id: "conn-1" });
    expect(h.actor.getSnapshot().value).toBe("LISTENING");
    h.connect();
    expect(h.actor.getSnapshot().context.connections).toEqual(["conn-2"]);
  });

  it("finished connections do not accumulate in the snapshot", () => {
    const h = harness();
    for (let i = 1; i <= 50; i++) {
      h.connect();
      h.actor.send({ type: "CONNECTION_CLOSED", id: `conn-${i}` });
    }
    const s = h.actor.getSnapshot();
    expect(Object.keys(s.children)).toEqual(["backend"]);
    expect(s.context).toMatchObject({ nextId: 51, connections: [] });
  });
});

describe("-s through the real server (startServer with singleConnection)", () => {
  it("serves the first client, refuses a second meanwhile, and stops once the first has gone", async () => {
    const t = await startInProcess({ singleConnection: true });
    try {
      const first = await NbdClient.open({ path: t.sock });
      await first.pwrite(Buffer.alloc(512, 7), 0);
      // The second is accepted by the kernel, then closed unanswered: no greeting.
      const second = await RawConn.connect(t.sock);
      await expect(handshake(second)).rejects.toThrow(/closed/);
      expect(t.srv.connections().map((c) => c.id)).toEqual(["conn-1"]);
      // The first one is not disturbed.
      expect(await first.pread(512, 0)).toEqual(Buffer.alloc(512, 7));
      let stopped = false;
      void t.srv.closed.then(() => (stopped = true));
      await first.disconnect();
      await t.srv.closed;
      expect(stopped).toBe(true);
      expect(t.ctl.closes).toBe(t.ctl.opens);
    } finally {
      await t.stop();
    }
  });
});
