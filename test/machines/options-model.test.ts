// Model-based protocol test of option haggling: every shortest path of the
// options machine (@xstate/graph, each (state, incoming event) pair a node,
// so every transition is the last step of some path) is replayed as REAL
// option frames over a unix socket to an in-process server, and every reply
// is checked against what the machine's actions at that step predict.
//
// The server's own follow-ups (EXPORTS_LISTED, LIST_FAILED, EXPORT_READY,
// EXPORT_FAILED, TLS_FAILED) are part of the option step before them; the
// model offers only the follow-up the server will really produce (the
// export "missing" fails to open; listing fails, with a plain error:
// NBD_REP_ERR_PLATFORM, when the test says so).
// TIMEOUT is the client staying silent longer than the server's option
// timeout (short here). Not modelled, because the runner cannot produce
// them: TLS_READY (this server has no TLS credentials; test/interop/tls
// covers it), CLIENT_CLOSED while an option is being answered (the runner
// reads the next frame only once it is).
import { createTestModel } from "@xstate/graph";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { transition, type SnapshotFrom } from "xstate";
import { matchMetaContexts } from "../../src/actors/negotiation.js";
import { optionsMachine, type OptionsEvent, type TlsMode } from "../../src/machines/options.js";
import * as C from "../../src/protocol/constants.js";
import { encodeInfoRequest, encodeMetaContextRequest, encodeOption } from "../../src/protocol/wire.js";
import { handshake, RawConn, readOptionReply } from "../helpers/raw.js";
import { waitFor } from "../helpers/server.js";
import { readBack, transmissionWorks } from "./wire-steps.js";
import { startInProcess, type InProcess } from "./inproc.js";

type Snap = SnapshotFrom<typeof optionsMachine>;
type Act = { type: string; params?: Record<string, unknown> };

const MAX_OPTIONS = 3;
const FOLLOW_UPS = new Set(["EXPORTS_LISTED", "LIST_FAILED", "EXPORT_READY", "EXPORT_FAILED", "TLS_READY", "TLS_FAILED"]);

/** Every option a client can send, with concrete payloads. */
const CLIENT_EVENTS: OptionsEvent[] = [
  { type: "NBD_OPT_ABORT" },
  { type: "NBD_OPT_STARTTLS", length: 0 },
  { type: "NBD_OPT_STARTTLS", length: 4 },
  { type: "NBD_OPT_EXPORT_NAME", name: "" },
  { type: "NBD_OPT_EXPORT_NAME", name: "missing" },
  { type: "NBD_OPT_LIST", length: 0 },
  { type: "NBD_OPT_LIST", length: 4 },
  ...(["NBD_OPT_INFO", "NBD_OPT_GO"] as const).flatMap((type): OptionsEvent[] => [
    { type, name: "", infos: [] },
    { type, name: "", infos: [C.NBD_INFO_NAME, C.NBD_INFO_DESCRIPTION, C.NBD_INFO_BLOCK_SIZE] },
    { type, name: "missing", infos: [] },
    { type, name: "", infos: [], malformed: true },
  ]),
  { type: "NBD_OPT_STRUCTURED_REPLY", length: 0 },
  { type: "NBD_OPT_STRUCTURED_REPLY", length: 4 },
  ...(["NBD_OPT_LIST_META_CONTEXT", "NBD_OPT_SET_META_CONTEXT"] as const).flatMap((type): OptionsEvent[] => [
    { type, exportName: "", queries: [] },
    { type, exportName: "", queries: [C.BASE_ALLOCATION] },
    { type, exportName: "", queries: [], malformed: true },
  ]),
  { type: "NBD_OPT_UNKNOWN", option: C.NBD_OPT_EXTENDED_HEADERS },
  { type: "OPTION_TOO_LARGE", option: C.NBD_OPT_LIST },
  { type: "CLIENT_CLOSED" },
  { type: "TIMEOUT" },
];

/** The server's idle timeout between options in this test. */
const OPTION_TIMEOUT_MS = 800;

/** What the model may do next in a state: only what the real server can produce. */
function events(s: Snap): OptionsEvent[] {
  const missing = s.context.exportName === "missing";
  switch (s.value) {
    case "AWAIT_OPTION":
      return CLIENT_EVENTS;
    case "LIST_EXPORTS":
      return [{ type: "EXPORTS_LISTED" }, { type: "LIST_FAILED", error: "NBD_REP_ERR_PLATFORM", message: "" }];
    case "OPEN_EXPORT":
    case "EXPORT_NAME":
      return [missing ? { type: "EXPORT_FAILED", error: "NBD_REP_ERR_UNKNOWN", message: "" } : { type: "EXPORT_READY" }];
    case "STARTTLS":
      return [{ type: "TLS_FAILED", message: "" }];
    default:
      return [];
  }
}

/** The option frame a client sends for a model event. */
function frame(ev: OptionsEvent): Buffer {
  switch (ev.type) {
    case "NBD_OPT_EXPORT_NAME":
      return encodeOption(C.NBD_OPT_EXPORT_NAME, Buffer.from(ev.name));
    case "NBD_OPT_ABORT":
      return encodeOption(C.NBD_OPT_ABORT);
    case "NBD_OPT_LIST":
    case "NBD_OPT_STARTTLS":
    case "NBD_OPT_STRUCTURED_REPLY":
      return encodeOption(C[ev.type], Buffer.alloc(ev.length, 0xaa));
    case "NBD_OPT_INFO":
    case "NBD_OPT_GO":
      // Malformed: the name's length runs past the end of the payload.
      return encodeOption(C[ev.type], ev.malformed ? Buffer.from([0, 0, 0, 9, 0x61, 0, 0]) : encodeInfoRequest(ev.name, ev.infos));
    case "NBD_OPT_LIST_META_CONTEXT":
    case "NBD_OPT_SET_META_CONTEXT":
      // Malformed: one query announced, its length past the end.
      return encodeOption(C[ev.type], ev.malformed ? Buffer.from([0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 50]) : encodeMetaContextRequest(ev.exportName, ev.queries));
    case "NBD_OPT_UNKNOWN":
      return encodeOption(ev.option);
    case "OPTION_TOO_LARGE":
      return encodeOption(ev.option, Buffer.alloc(C.MAX_OPTION_LENGTH + 1));
    default:
      throw new Error(`${ev.type} is not a client message`);
  }
}

const optionOf = (ev: OptionsEvent): number =>
  "option" in ev ? ev.option : (C as unknown as Record<string, number>)[ev.type]!;

/**
 * Send one option (and let the server do its follow-up), then check the
 * wire against the actions the machine ran for the option and follow-up.
 */
async function step(t: InProcess, conn: RawConn, ev: OptionsEvent, acts: Act[], after: Snap): Promise<void> {
  const names = acts.map((a) => a.type);
  if (ev.type === "TIMEOUT") {
    // Say nothing: the server must hang up once the option timeout passes.
    expect(await conn.waitClosed(OPTION_TIMEOUT_MS * 4), "the server closes an idle client").toBe(true);
    expect(await t.idle()).toBe(true);
    return;
  }
  if (ev.type === "CLIENT_CLOSED") {
    conn.destroy();
    expect(await t.idle(), "the server forgets a client that hung up").toBe(true);
    return;
  }
  conn.write(frame(ev));
  const option = optionOf(ev);
  const finals: number[] = [];
  const expectFrames = (types: number[], last: number) => {
    finals.push(...types, last);
  };
  const error = acts.find((a) => a.type === "replyError");
  if (error) expectFrames([], C[error.params!.error as "NBD_REP_ERR_UNSUP"]);
  else if (names.includes("replyInfo")) {
    const infos = "infos" in ev ? ev.infos : [];
    expectFrames(Array(1 + infos.length).fill(C.NBD_REP_INFO), C.NBD_REP_ACK);
  } else if (names.includes("listExports")) expectFrames([C.NBD_REP_SERVER], C.NBD_REP_ACK);
  else if (names.includes("replyMetaContexts")) {
    const q = ev as Extract<OptionsEvent, { queries: string[] }>;
    const n = matchMetaContexts(q.queries, q.type === "NBD_OPT_LIST_META_CONTEXT").length;
    expectFrames(Array(n).fill(C.NBD_REP_META_CONTEXT), C.NBD_REP_ACK);
  } else if (names.includes("replyAck")) expectFrames([], C.NBD_REP_ACK);

  const got: number[] = [];
  for (let i = 0; i < finals.length; i++) {
    const r = await readOptionReply(conn, 3000);
    expect(r.option, "the reply names the option it answers").toBe(option);
    got.push(r.type);
    await readBack(r, ev, after);
  }
  expect(got.map((x) => C.REPLY_NAMES[x] ?? x)).toEqual(finals.map((x) => C.REPLY_NAMES[x] ?? x));
  if (names.includes("replyExportName")) {
    const b = await conn.read(10, 3000); // NO_ZEROES was negotiated: no padding
    expect(b.readBigUInt64BE(0)).toBe(1048576n);
    expect(b.readUInt16BE(8) & C.NBD_FLAG_HAS_FLAGS).toBe(C.NBD_FLAG_HAS_FLAGS);
  }
  if (names.includes("closeConnection")) {
    expect(await conn.waitClosed(3000), `${ev.type}: the server closes the connection`).toBe(true);
    expect(await t.idle()).toBe(true);
    return;
  }
  if (after.value === "TRANSMISSION") {
    await transmissionWorks(t, conn, after.context.structuredReplies);
    return;
  }
  expect(conn.closed, "the connection stays open").toBe(false);
  expect(await waitFor(() => t.phases()[0] === "options", 2000, 2), `phase ${t.phases()[0]}`).toBe(true);
}

async function walk(t: InProcess, steps: { state: Snap; event: OptionsEvent }[], initial: Snap): Promise<void> {
  const conn = await RawConn.connect(t.sock);
  try {
    await handshake(conn);
    let prev = initial;
    for (let i = 0; i < steps.length; i++) {
      const { event, state } = steps[i]!;
      if (event.type.startsWith("xstate.")) continue;
      expect(FOLLOW_UPS.has(event.type), `${event.type} follows an option`).toBe(false);
      const [, acts1] = transition(optionsMachine, prev, event);
      let after = state;
      let acts = acts1 as Act[];
      // The server's follow-up: the path's next step, or (a path ending
      // mid-option) the one the server will produce anyway.
      let next: { state: Snap; event: OptionsEvent } | undefined = steps[i + 1];
      if (next && FOLLOW_UPS.has(next.event.type)) i++;
      else {
        const follow = events(state).find((e) => FOLLOW_UPS.has(e.type));
        next = follow && { event: follow, state: transition(optionsMachine, state, follow)[0] };
      }
      if (next) {
        const [, acts2] = transition(optionsMachine, state, next.event);
        acts = [...acts, ...(acts2 as Act[])];
        after = next.state;
      }
      t.ctl.failList = next?.event.type === "LIST_FAILED";
      await step(t, conn, event, acts, after);
      prev = after;
    }
  } finally {
    conn.destroy();
  }
  expect(await t.idle(), "the connection is gone at the end of the path").toBe(true);
  expect(t.ctl.closes, "every context opened was closed").toBe(t.ctl.opens);
}

function paths(tls: TlsMode) {
  const input = { maxOptions: MAX_OPTIONS, tls };
  const model = createTestModel(optionsMachine, { input } as never);
  const initial = optionsMachine.resolveState({ value: "AWAIT_OPTION", context: { optionCount: 0, maxOptions: MAX_OPTIONS, tls, tlsActive: false, structuredReplies: false, go: false, exportName: "" } });
  // Key each node by state and incoming event, so every transition ends some path.
  const found = model.getShortestPaths({
    events: events as never,
    serializeState: (s: Snap, e?: OptionsEvent) => JSON.stringify([s.value, s.context, e ?? null]),
  } as never);
  return { found, initial };
}

for (const tls of ["off", "require"] as const) {
  describe(`options machine model over a real socket (tls ${tls}, maxOptions ${MAX_OPTIONS})`, () => {
    let t: InProcess;
    beforeAll(async () => {
      t = await startInProcess({ maxOptions: MAX_OPTIONS, tls, optionTimeoutMs: OPTION_TIMEOUT_MS });
    });
    afterAll(async () => t?.stop());

    it("walks every shortest path", async () => {
      const { found, initial } = paths(tls);
      const covered = new Set<string>();
      for (const p of found) {
        const steps = p.steps as unknown as { state: Snap; event: OptionsEvent }[];
        for (const s of steps) covered.add(s.event.type);
        try {
          await walk(t, steps, initial);
        } catch (e) {
          (e as Error).message += `\npath: ${p.description}`;
          throw e;
        }
      }
      expect(found.length).toBeGreaterThan(tls === "off" ? 200 : 20);
      const followUps = tls === "off" ? ["EXPORTS_LISTED", "LIST_FAILED", "EXPORT_READY", "EXPORT_FAILED"] : ["TLS_FAILED"];
      for (const type of [...CLIENT_EVENTS.map((e) => e.type), ...followUps]) expect(covered, type).toContain(type);
      expect(t.ctl.log.filter((m) => /TypeError|ReferenceError|uncaught/i.test(m))).toEqual([]);
    }, 120_000);
  });
}
