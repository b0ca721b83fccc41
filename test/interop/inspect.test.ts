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

/** "nbdstate: inspect: MACHINE ID: FROM --EVENT--> TO" lines, parsed. */
function transitions(stderr: string) {
  const re = /^nbdstate: inspect: (\w+) (\S+)(?: \(([^)]*)\))?: (\S+) --(\S+)--> (\S+)(?: \((\w+)\))?$/;
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

  it("logs handshake -> options -> transmission for one nbdinfo connection, then the shutdown", async () => {
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

    // nbdinfo's connection (the test harness's readiness probe came and went before it).
    const hsDone = at(listening, "handshake done", (x) =>
      x.machine === "handshake" && x.from === "AWAIT_CLIENT_FLAGS" && x.event === "CLIENT_FLAGS" && x.to === "NEGOTIATING" && x.status === "done");
    const hs = t[hsDone]!.actor;
    const hsStart = at(listening, "handshake start", (x) => x.actor === hs && x.from === "(start)" && x.to === "AWAIT_CLIENT_FLAGS");
    expect(hsStart).toBeLessThan(hsDone);
    const accepted = t.slice(0, hsStart).map((x) => x.machine === "server" && x.event === "CONNECTION").lastIndexOf(true);
    expect(accepted, "server CONNECTION before the handshake").toBeGreaterThan(listening);

    i = at(hsDone, "options start", (x) => x.machine === "options" && x.from === "(start)" && x.to === "AWAIT_OPTION");
    i = at(i, "NBD_OPT_GO", (x) => x.machine === "options" && x.from === "AWAIT_OPTION" && x.event === "NBD_OPT_GO" && x.to === "OPEN_EXPORT");
    i = at(i, "options -> transmission", (x) =>
      x.machine === "options" && x.from === "OPEN_EXPORT" && x.event === "EXPORT_READY" && x.to === "TRANSMISSION" && x.status === "done");
    i = at(i, "transmission SERVING", (x) => x.machine === "transmission" && x.from === "(start)" && x.to === "SERVING");
    i = at(i, "NBD_CMD_DISC", (x) => x.machine === "transmission" && x.from === "SERVING" && x.event === "NBD_CMD_DISC" && x.to === "DRAINING");
    i = at(i, "transmission closed", (x) => x.machine === "transmission" && x.to === "CLOSED" && x.status === "done");
    i = at(i, "connection gone", (x) => x.machine === "server" && x.event === "CONNECTION_CLOSED");
    // SIGTERM: the server stops, the layer unloads.
    i = at(i, "server stopped", (x) => x.machine === "server" && x.event === "SHUTDOWN" && x.status === "done");
    at(i, "layer unloaded", (x) => x.machine === "backendLifecycle" && x.from === "unloading" && x.to === "unloaded");

    // The negotiated export's context, open and closed through its machine.
    const ctx = t.filter((x) => x.machine === "context" && x.to === "open").map((x) => x.actor);
    expect(ctx.length).toBeGreaterThan(0);
    for (const id of ctx) expect(t.some((x) => x.actor === id && x.to === "closed" && x.status === "done")).toBe(true);
    // Each handshake/options/transmission actor's lines chain: FROM is the previous TO.
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

  const names = () => new Map(messages.filter((m) => m.type === "@xstate.actor").map((m) => [m.sessionId, m.name]));
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
      expect(messages.some((m) => m.type === "@xstate.event" && m.event?.type === "NBD_OPT_GO")).toBe(true);
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
