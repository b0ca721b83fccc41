// --inspect: watching the machines.
//   --inspect=stderr         one line per transition (actor, from, event, to)
//                            for an nbdinfo connection: handshake -> options
//                            -> transmission in order;
//   --inspect=ws://HOST:PORT @statelyai/inspect's WebSocket inspector
//                            against a local `ws` relay: @xstate.actor,
//                            @xstate.event and @xstate.snapshot messages for
//                            every machine, none per request.
// And the flags' parsing.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { WebSocketServer } from "ws";
import type { AddressInfo } from "node:net";
import { parseArgs, parseInspect, parseStatusPage } from "../../src/cli/args.js";
import { openClient } from "../../src/client/index.js";
import { requireTools, TOOLS } from "../helpers/tools.js";
import { isNbdkit, runOk, sleep, startServer, waitFor, type RunningServer } from "../helpers/server.js";

describe("--inspect and --status-page parsing", () => {
  it("--inspect takes stderr or a ws:// URL, and repeats", () => {
    expect(parseInspect("stderr")).toEqual({ kind: "stderr" });
    expect(parseInspect("ws://127.0.0.1:8080")).toEqual({ kind: "ws", url: "ws://127.0.0.1:8080/" });
    expect(() => parseInspect("http://x")).toThrow(/--inspect must be stderr or ws:\/\/HOST:PORT/);
    expect(() => parseInspect("stdout")).toThrow(/--inspect/);
    const a = parseArgs(["--inspect=stderr", "--inspect", "ws://localhost:9", "memory", "1M"]);
    expect(a.inspect).toEqual([{ kind: "stderr" }, { kind: "ws", url: "ws://localhost:9/" }]);
    expect(parseArgs(["memory", "1M"]).inspect).toEqual([]);
  });

  it("--status-page takes [HOST:]PORT", () => {
    expect(parseStatusPage("8080")).toEqual({ port: 8080 });
    expect(parseStatusPage("0.0.0.0:80")).toEqual({ host: "0.0.0.0", port: 80 });
    expect(parseStatusPage("[::1]:8080")).toEqual({ host: "::1", port: 8080 });
    for (const bad of ["", "x", "host:", ":80", "70000", "::1:80", "a:b:1"]) {
      expect(() => parseStatusPage(bad), bad).toThrow(/--status-page must be \[HOST:\]PORT/);
    }
    expect(parseArgs(["--status-page=9000", "memory", "1M"]).statusPage).toEqual({ port: 9000 });
    expect(parseArgs(["memory", "1M"]).statusPage).toBeUndefined();
  });
});

const nbdinfoOk = !isNbdkit && requireTools([TOOLS.nbdinfo]);

/** "nbdstate: inspect: TIME MACHINE ID: FROM --EVENT--> TO" lines (TIME in UTC, to the millisecond), parsed. */
function transitions(stderr: string) {
  const re = /^nbdstate: inspect: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (\w+) (\S+)(?: \(([^)]*)\))?: (\S+) --(\S+)--> (\S+)(?: \((\w+)\))?$/;
  return stderr
    .split("\n")
    .filter((l) => l.startsWith("nbdstate: inspect: "))
    .map((l) => {
      const m = re.exec(l);
      if (!m) throw new Error(`unexpected --inspect=stderr line: ${l}`);
      return { machine: m[1]!, actor: m[2]!, layer: m[3], from: m[4]!, event: m[5]!, to: m[6]!, status: m[7], line: l };
    });
}

describe.skipIf(!nbdinfoOk)("--inspect=stderr", () => {
  let srv: RunningServer;
  afterEach(async () => {
    await srv?.stop();
  });

  it("logs one nbdinfo connection: the connection machine, its handshake, options and transmission, its teardown, then the shutdown", async () => {
    srv = await startServer(["--inspect=stderr", "memory", "1M"]);
    const r = await runOk("nbdinfo", ["--json", srv.uri]);
    expect(JSON.parse(r.stdout).exports[0]["export-size"]).toBe(1 << 20);
    // The connection has closed once the server says so.
    expect(await waitFor(() => /server \S+: LISTENING --CONNECTION_CLOSED--> LISTENING/.test(srv.stderr))).toBe(true);
    await srv.stop();
    const t = transitions(srv.stderr);
    /** The first line at or after `from` matching `pred`. */
    const at = (from: number, what: string, pred: (x: (typeof t)[number]) => boolean) => {
      const i = t.findIndex((x, k) => k >= from && pred(x));
      expect(i, `${what} (after line ${from}) in:\n${srv.stderr}`).toBeGreaterThanOrEqual(0);
      return i;
    };

    // The stack comes up, then the server.
    let i = at(0, "layer loaded", (x) => x.machine === "backendLifecycle" && x.layer === "memory" && x.from === "loading" && x.to === "loaded");
    i = at(i, "layer running", (x) => x.machine === "backendLifecycle" && x.from === "forking" && x.to === "running");
    const listening = at(i, "server listening", (x) => x.machine === "server" && x.from === "(start)" && x.to === "LISTENING");

    // nbdinfo's connection: the connection machine is the root actor; it invokes handshake, options and
    // transmission in turn (named CONN/PHASE). The test harness's readiness probe came and went before it.
    const hsDone = at(listening, "handshake done", (x) =>
      x.machine === "handshake" && x.from === "AWAIT_CLIENT_FLAGS" && x.event === "xstate.done.actor.readClientFlags" && x.to === "NEGOTIATING" && x.status === "done");
    const conn = t[hsDone]!.actor.split("/")[0]!;
    expect(conn).toMatch(/^conn-\d+$/);
    const of = (phase: string) => `${conn}/${phase}`;
    const connStart = at(listening, "connection start", (x) => x.machine === "connection" && x.actor === conn && x.from === "(start)" && x.to === "PRECONNECT");
    expect(t.slice(listening, connStart + 2).some((x) => x.machine === "server" && x.event === "CONNECTION"), "the server took the connection").toBe(true);
    // The connection's own lines: every phase, then its teardown, in order.
    let c = connStart;
    for (const [from, event, to] of [
      ["PRECONNECT", "xstate.done.actor.preconnect", "HANDSHAKE"],
      ["HANDSHAKE", "xstate.done.actor.handshake", "OPTIONS"],
      ["OPTIONS", "xstate.done.actor.options", "TRANSMISSION"],
      ["TRANSMISSION", "xstate.done.actor.transmission", "CLOSING"],
      ["CLOSING", "xstate.done.actor.closeExport", "FLUSHING"],
      ["FLUSHING", "xstate.done.actor.flushSocket", "CLOSED"],
    ] as const) {
      c = at(c, `connection ${from} -> ${to}`, (x) => x.actor === conn && x.from === from && x.event === event && x.to === to);
    }
    expect(t[c]!.status).toBe("done");
    // Each phase machine's lines, between the connection entering and leaving it.
    const phase = (m: string) => t.map((x, k) => [x, k] as const).filter(([x]) => x.actor === of(m));
    const hsLines = phase("handshake");
    expect(hsLines.map(([x]) => `${x.from} -> ${x.to}`)).toEqual(["(start) -> AWAIT_CLIENT_FLAGS", "AWAIT_CLIENT_FLAGS -> NEGOTIATING"]);
    const opt = phase("options");
    expect(opt[0]![0]).toMatchObject({ from: "(start)", to: "AWAIT_OPTION" });
    // nbdinfo: INFO and meta contexts, then GO (each option read by readOption, then its effect).
    i = at(opt[0]![1], "NBD_OPT_GO", (x) => x.actor === of("options") && x.from === "AWAIT_OPTION" && x.event === "xstate.done.actor.readOption" && x.to === "OPEN_EXPORT_GO");
    i = at(i, "options -> transmission", (x) =>
      x.actor === of("options") && x.from === "OPEN_EXPORT_GO" && x.event === "xstate.done.actor.openExport" && x.to === "TRANSMISSION" && x.status === "done");
    expect(opt.some(([x]) => x.to === "OPEN_EXPORT_INFO"), "nbdinfo asks NBD_OPT_INFO first").toBe(true);
    const tx = phase("transmission");
    expect(tx.map(([x]) => `${x.from} --${x.event}--> ${x.to}`)).toEqual([
      "(start) --xstate.init--> SERVING",
      "SERVING --NBD_CMD_DISC--> DRAINING",
      "DRAINING --xstate.done.actor.awaitReplies--> CLOSED",
    ]);
    expect(tx.at(-1)![0].status).toBe("done");
    i = at(tx.at(-1)![1], "connection gone", (x) => x.machine === "server" && x.event === "CONNECTION_CLOSED");
    // SIGTERM: the server stops, the layer unloads.
    i = at(i, "server stopped", (x) => x.machine === "server" && x.event === "SHUTDOWN" && x.status === "done");
    at(i, "layer unloaded", (x) => x.machine === "backendLifecycle" && x.from === "unloading" && x.to === "unloaded");

    // The negotiated export's context, open and closed through its machine.
    const ctx = t.filter((x) => x.machine === "context" && x.to === "open").map((x) => x.actor);
    expect(ctx.length).toBeGreaterThan(0);
    for (const id of ctx) expect(t.some((x) => x.actor === id && x.to === "closed" && x.status === "done")).toBe(true);
    // Each actor's lines chain: FROM is the previous TO (a connection's phases are named by their connection).
    const last = new Map<string, string>();
    for (const x of t) {
      if (x.from !== "(start)") expect(x.from, x.line).toBe(last.get(x.actor));
      last.set(x.actor, x.to);
    }
  });

  it("prints nothing without --inspect", async () => {
    srv = await startServer(["memory", "1M"]);
    await runOk("nbdinfo", [srv.uri]);
    await srv.stop();
    expect(srv.stderr).not.toContain("inspect:");
  });
});

interface Message {
  type: string;
  sessionId: string;
  name?: string;
  event?: { type: string; [k: string]: unknown };
  snapshot?: { status?: string; value?: unknown; context?: unknown };
}

describe.skipIf(isNbdkit)("--inspect=ws://127.0.0.1:PORT against a local relay", () => {
  let relay: WebSocketServer;
  let srv: RunningServer;
  const messages: Message[] = [];
  const raw: string[] = [];

  beforeAll(async () => {
    relay = new WebSocketServer({ host: "127.0.0.1", port: 0 });
    await new Promise<void>((r) => relay.once("listening", () => r()));
    relay.on("connection", (ws) => {
      ws.on("message", (data) => {
        const s = String(data);
        raw.push(s);
        messages.push(JSON.parse(s) as Message);
      });
    });
    const port = (relay.address() as AddressInfo).port;
    srv = await startServer([`--inspect=ws://127.0.0.1:${port}`, "memory", "1M"]);
  });

  afterAll(async () => {
    await srv?.stop();
    await new Promise<void>((r) => relay?.close(() => r()));
  });

  /** The machine each actor runs (its definition's id: a connection actor is named conn-N, its machine is "connection"). */
  const machineOf = (m: Message & { definition?: string }) => {
    try {
      return (JSON.parse(m.definition ?? "{}") as { id?: string }).id ?? m.name;
    } catch {
      return m.name;
    }
  };
  const names = () => new Map(messages.filter((m) => m.type === "@xstate.actor").map((m) => [m.sessionId, machineOf(m)]));
  const snapshotsOf = (machine: string) => {
    const n = names();
    return messages.filter((m) => m.type === "@xstate.snapshot" && n.get(m.sessionId) === machine);
  };

  it("receives @xstate.* messages for every machine of a connection, none per request", async () => {
    // The stack and the server, from startup (events before the socket opened were kept).
    expect(await waitFor(() => snapshotsOf("server").some((m) => m.snapshot?.value === "LISTENING"), 15_000)).toBe(true);
    expect(snapshotsOf("backendLifecycle").map((m) => m.snapshot?.value)).toEqual(
      expect.arrayContaining(["loaded", "configured", "ready", "running"]),
    );

    const c = await openClient({ path: srv.sock });
    try {
      expect(await waitFor(() => snapshotsOf("transmission").some((m) => m.snapshot?.value === "SERVING"), 10_000)).toBe(true);
      // Per handshake actor (the harness's readiness probe was one too, REJECTED).
      const hs = new Map<string, unknown[]>();
      for (const m of snapshotsOf("handshake")) hs.set(m.sessionId, [...(hs.get(m.sessionId) ?? []), m.snapshot?.value]);
      expect([...hs.values()]).toContainEqual(["AWAIT_CLIENT_FLAGS", "NEGOTIATING"]);
      expect(snapshotsOf("options").map((m) => m.snapshot?.value)).toContain("TRANSMISSION");
      // The option arrives as readOption's outcome, the decoded option in it.
      const readOptions = messages.filter((m) => m.type === "@xstate.event" && m.event?.type === "xstate.done.actor.readOption");
      expect(readOptions.map((m) => (m.event!.output as { type?: string } | undefined)?.type)).toContain("NBD_OPT_GO");
      // The connection machine is the root of each connection; the phases are its invoked children.
      expect(snapshotsOf("connection").map((m) => m.snapshot?.value)).toEqual(expect.arrayContaining(["PRECONNECT", "HANDSHAKE", "OPTIONS", "TRANSMISSION"]));
      const actors = messages.filter((m) => m.type === "@xstate.actor") as (Message & { parentId?: string })[];
      const connection = new Set(actors.filter((m) => machineOf(m) === "connection").map((m) => m.sessionId));
      expect(actors.filter((m) => machineOf(m) === "connection").map((m) => m.name)).toContainEqual(expect.stringMatching(/^conn-\d+$/));
      for (const phase of ["handshake", "options", "transmission"]) {
        const children = actors.filter((m) => machineOf(m) === phase);
        expect(children.length, phase).toBeGreaterThan(0);
        for (const m of children) expect(connection.has(String(m.parentId)), `${phase}'s parent is a connection`).toBe(true);
      }
      for (const m of messages) {
        expect(m.type).toMatch(/^@xstate\.(actor|event|snapshot)$/);
        expect(typeof m.sessionId).toBe("string");
      }

      // Requests are plain code: a hundred of them send nothing.
      await sleep(300);
      const before = messages.length;
      await c.pwrite(Buffer.alloc(4096, 1), 0);
      await Promise.all(Array.from({ length: 100 }, (_, i) => c.pread(512, i * 512)));
      await c.flush();
      await sleep(300);
      expect(messages.length).toBe(before);
    } finally {
      await c.disconnect();
    }
    expect(await waitFor(() => snapshotsOf("transmission").some((m) => m.snapshot?.value === "CLOSED" && m.snapshot.status === "done"), 10_000)).toBe(true);

    // Live objects (the client's socket in CONNECTION) reach the relay as names, not walked.
    const conn = messages.find((m) => m.type === "@xstate.event" && m.event?.type === "CONNECTION");
    expect(conn?.event?.socket).toBe("[Socket]");
    expect(Math.max(...raw.map((s) => s.length))).toBeLessThan(64 * 1024);
  });
});
