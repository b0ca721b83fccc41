// Every transition and guard of the connection, handshake, options and
// transmission machines, through xstate's pure transition() (see
// machine-table.ts): the state reached, the context, the output, the named
// side effects, the actors invoked and the delays started. The expected
// values are the spec's rules (doc/proto.md) as written here, not read from
// the machines. The options machine is assembled from one record per
// option, so its rows are generated per option: the rules every option meets
// first (budget, TLS required, malformed payload), then that option's own,
// both from the table OPTION_RULES below. The server machine is in
// protocol-server.test.ts; the paths through the real runner in the
// *-model.test.ts files.
import { describe, expect, it } from "vitest";
import { transition } from "xstate";
import { NbdError } from "../../src/backend/types.js";
import { connectionMachine } from "../../src/machines/connection.js";
import { handshakeMachine } from "../../src/machines/handshake.js";
import { optionsMachine } from "../../src/machines/options.js";
import { transmissionMachine } from "../../src/machines/transmission.js";
import { builtinOptions } from "../../src/options/index.js";
import { ClientGone } from "../../src/options/assemble.js";
import type { CurrentOption } from "../../src/options/record.js";
import * as C from "../../src/protocol/constants.js";
import { WireError } from "../../src/protocol/wire-base.js";
import { decided, drive, machineTable, restore, type TRow } from "./machine-table.js";

const done = (id: string, output?: unknown) => ({ type: `xstate.done.actor.${id}`, output });
const fail = (id: string, error: unknown = new Error(`${id} failed`)) => ({ type: `xstate.error.actor.${id}`, error });
const after = (delay: string, machine: string, state: string) => ({ type: `xstate.after.${delay}.${machine}.${state}` });
const E = (type: string, extra: Record<string, unknown> = {}) => ({ type, ...extra });

// ---------------------------------------------------------------- handshake

// "S: 64 bits, NBDMAGIC ... S: 16 bits, handshake flags; C: 32 bits, client
// flags". "If the client sets a flag the server does not understand, the
// server MUST close the connection" (known: FIXED_NEWSTYLE, NO_ZEROES).
describe("handshakeMachine", () => {
  const rejected = (reason: string) => ({ ok: false, reason });
  const flags = (n: number) => done("readClientFlags", n);
  machineTable(handshakeMachine, { clientFlags: 0, noZeroes: false }, [
    // The greeting first, then the client's flags are read, within HANDSHAKE_TIMEOUT.
    { from: "SEND_GREETING", event: E("xstate.init"), covers: ["SEND_GREETING always []"], to: "AWAIT_CLIENT_FLAGS", effects: ["sendGreeting"], invokes: ["readClientFlags"], timers: ["HANDSHAKE_TIMEOUT"] },
    { from: "AWAIT_CLIENT_FLAGS", event: flags(3), guard: "", to: "NEGOTIATING", expect: { clientFlags: 3, noZeroes: true }, output: { ok: true, noZeroes: true, reason: undefined } },
    { from: "AWAIT_CLIENT_FLAGS", event: flags(1), guard: "", to: "NEGOTIATING", expect: { clientFlags: 1, noZeroes: false }, output: { ok: true, noZeroes: false } },
    { from: "AWAIT_CLIENT_FLAGS", event: flags(2), guard: "", to: "NEGOTIATING", expect: { clientFlags: 2, noZeroes: true }, output: { ok: true, noZeroes: true } },
    { from: "AWAIT_CLIENT_FLAGS", event: flags(0), guard: "", to: "NEGOTIATING", expect: { clientFlags: 0 }, output: { ok: true, noZeroes: false } },
    { from: "AWAIT_CLIENT_FLAGS", event: flags(4), guard: "unknownClientFlags", to: "REJECTED", expect: { clientFlags: 0 }, output: rejected("client sent unknown flags") },
    { from: "AWAIT_CLIENT_FLAGS", event: flags(0x80000003), guard: "unknownClientFlags", to: "REJECTED", output: rejected("client sent unknown flags") },
    { from: "AWAIT_CLIENT_FLAGS", event: fail("readClientFlags"), guard: "", to: "REJECTED", output: rejected("client closed the connection") },
    { from: "AWAIT_CLIENT_FLAGS", event: after("HANDSHAKE_TIMEOUT", "handshake", "AWAIT_CLIENT_FLAGS"), guard: "", to: "REJECTED", output: rejected("handshake timed out") },
  ]);
});

// ------------------------------------------------------------- transmission

describe("transmissionMachine", () => {
  const drain = { effects: ["stopReading"], invokes: ["awaitReplies"] };
  const refuse = { effects: ["refuseRequests"], invokes: ["awaitQuiet"], timers: ["SHUTDOWN_GRACE"] };
  const gone = { to: "CLOSED", output: { finalize: false, reason: "client closed the connection" } };
  const DISC = "client sent NBD_CMD_DISC";
  const HALF = "client closed its sending side";
  const SHUT = "the server is shutting down";
  machineTable(transmissionMachine, { clientThere: true, shuttingDown: false }, [
    { from: "SERVING", event: E("xstate.init"), input: { shuttingDown: false }, covers: [], to: "SERVING", effects: ["startServing"] },
    // A SHUTDOWN that came during option haggling: serving starts refusing at once.
    { from: "SERVING", event: E("xstate.init"), input: { shuttingDown: true }, covers: ["SERVING always [shutdownBefore]"], to: "SHUTTING_DOWN", effects: ["startServing", "refuseRequests"], invokes: ["awaitQuiet"], timers: ["SHUTDOWN_GRACE"] },
    // "MUST handle all outstanding requests" before closing: drain first.
    { from: "SERVING", event: E("NBD_CMD_DISC"), guard: "", to: "DRAINING", ...drain, expect: { reason: DISC } },
    { from: "SERVING", event: E("INPUT_ENDED"), guard: "", to: "DRAINING", ...drain, expect: { reason: HALF } },
    { from: "SERVING", event: E("FATAL", { reason: "bad request magic 0xeeeeeeee" }), guard: "", to: "DRAINING", ...drain, expect: { reason: "bad request magic 0xeeeeeeee" } },
    { from: "SERVING", event: E("SHUTDOWN"), guard: "", to: "SHUTTING_DOWN", ...refuse },
    { from: "SERVING", event: E("CLIENT_CLOSED"), guard: "", ...gone, expect: { clientThere: false } },
    // Quiet, or out of grace: the replies owed are still sent.
    { from: "SHUTTING_DOWN", event: done("awaitQuiet"), guard: "", to: "DRAINING", ...drain, expect: { reason: SHUT } },
    { from: "SHUTTING_DOWN", event: after("SHUTDOWN_GRACE", "transmission", "SHUTTING_DOWN"), guard: "", to: "DRAINING", ...drain, expect: { reason: SHUT } },
    { from: "SHUTTING_DOWN", event: E("NBD_CMD_DISC"), guard: "", to: "DRAINING", ...drain, expect: { reason: DISC } },
    { from: "SHUTTING_DOWN", event: E("INPUT_ENDED"), guard: "", to: "DRAINING", ...drain, expect: { reason: HALF } },
    { from: "SHUTTING_DOWN", event: E("FATAL", { reason: "payload too large" }), guard: "", to: "DRAINING", ...drain, expect: { reason: "payload too large" } },
    { from: "SHUTTING_DOWN", event: E("CLIENT_CLOSED"), guard: "", ...gone },
    // Every reply owed has been queued: finalize (the client is there), then close.
    { from: "DRAINING", ctx: { reason: DISC }, event: done("awaitReplies"), guard: "", to: "CLOSED", output: { finalize: true, reason: DISC } },
    // Nothing reaches a client that has gone: no finalize; the first reason stays.
    { from: "DRAINING", ctx: { reason: DISC }, event: E("CLIENT_CLOSED"), guard: "", to: "CLOSED", output: { finalize: false, reason: DISC } },
  ]);

  it("DRAINING and SHUTTING_DOWN ignore what no longer matters (a second DISC, SHUTDOWN, FATAL)", () => {
    for (const [from, types] of [["DRAINING", ["NBD_CMD_DISC", "SHUTDOWN", "FATAL", "INPUT_ENDED"]], ["SHUTTING_DOWN", ["SHUTDOWN"]]] as const) {
      for (const type of types) {
        const start = restore(transmissionMachine, from, { clientThere: true, shuttingDown: false, reason: "first" });
        const [next, acts] = transition(transmissionMachine, start as never, { type, reason: "x" } as never);
        expect(next.value, `${from} + ${type}`).toBe(from);
        expect(next.context).toEqual(start.context);
        expect(acts).toEqual([]);
      }
    }
  });
});

// --------------------------------------------------------------- connection

describe("connectionMachine", () => {
  const OPTS = { maxOptions: 5, tls: "require" };
  const HS_OK = done("handshake", { ok: true, noZeroes: true });
  const CHOSEN = { opened: { tag: "opened" }, info: { name: "disk" }, asked: "disk" };
  const NEGOTIATED = { transmission: true, chosen: CHOSEN, structuredReplies: true, extendedHeaders: false, metaContexts: [] };
  const TO_HS = [done("preconnect")];
  const TO_OPTS = [...TO_HS, HS_OK];
  const TO_TX = [...TO_OPTS, done("options", NEGOTIATED)];
  const TO_CLOSING = [...TO_TX, done("transmission", { finalize: true, reason: "client sent NBD_CMD_DISC" })];
  const TO_FLUSHING = [...TO_HS, done("handshake", { ok: false, reason: "client sent unknown flags" })];
  const closed = { to: "CLOSED", effects: ["logEnd", "destroySocket"] };
  const input = { options: OPTS };
  machineTable(connectionMachine, {}, [
    { from: "PRECONNECT", event: E("xstate.init"), input, covers: [], to: "PRECONNECT", invokes: ["preconnect"], expect: { options: OPTS, shuttingDown: false, negotiated: null } },
    // The greeting only once every layer's preconnect has let the client in.
    { from: "PRECONNECT", via: [], input, event: done("preconnect"), guard: "", to: "HANDSHAKE", invokes: ["handshake"] },
    { from: "PRECONNECT", via: [], input, event: fail("preconnect", new Error("address not allowed")), guard: "", ...closed, expect: { reason: "refused before the handshake: address not allowed" } },
    { from: "PRECONNECT", via: [], input, event: E("SHUTDOWN"), guard: "", ...closed, expect: { reason: "the server is shutting down" } },
    { from: "PRECONNECT", via: [], input, event: E("CLIENT_CLOSED"), guard: "", ...closed, expect: { reason: "client closed the connection" } },
    // Options negotiated with the settings the server was given.
    { from: "HANDSHAKE", via: TO_HS, input, event: HS_OK, guard: "handshakeOk", to: "OPTIONS", invokes: ["options"], inputs: { options: OPTS }, expect: { noZeroes: true } },
    { from: "HANDSHAKE", via: TO_HS, input, event: done("handshake", { ok: true, noZeroes: false }), guard: "handshakeOk", to: "OPTIONS", invokes: ["options"], expect: { noZeroes: false } },
    // A rejected handshake still flushes what was written before the socket closes.
    { from: "HANDSHAKE", via: TO_HS, input, event: done("handshake", { ok: false, reason: "client sent unknown flags" }), guard: "", to: "FLUSHING", invokes: ["flushSocket"], expect: { reason: "client sent unknown flags" } },
    // Before the handshake is done a shutdown just closes.
    { from: "HANDSHAKE", via: TO_HS, input, event: E("SHUTDOWN"), guard: "", ...closed, expect: { reason: "the server is shutting down" } },
    { from: "HANDSHAKE", via: TO_HS, input, event: E("CLIENT_CLOSED"), guard: "", ...closed, expect: { reason: "client closed the connection" } },
    { from: "OPTIONS", via: TO_OPTS, input, event: done("options", NEGOTIATED), guard: "intoTransmission", to: "TRANSMISSION", invokes: ["transmission"], inputs: { transmission: { shuttingDown: false } }, expect: { negotiated: NEGOTIATED } },
    // A shutdown during option haggling: the option in progress is answered (the options machine decides), and
    // a GO that still succeeds starts transmission already shutting down.
    { from: "OPTIONS", via: [...TO_OPTS, E("SHUTDOWN")], input, event: done("options", NEGOTIATED), guard: "intoTransmission", to: "TRANSMISSION", invokes: ["transmission"], inputs: { transmission: { shuttingDown: true } } },
    { from: "OPTIONS", via: TO_OPTS, input, event: done("options", { transmission: false, chosen: null, reason: "client sent NBD_OPT_ABORT" }), guard: "", to: "FLUSHING", invokes: ["flushSocket"], expect: { reason: "client sent NBD_OPT_ABORT", negotiated: null } },
    { from: "OPTIONS", via: TO_OPTS, input, event: E("SHUTDOWN"), guard: "", to: "OPTIONS", sends: ["SHUTDOWN>options"], expect: { shuttingDown: true } },
    { from: "OPTIONS", via: TO_OPTS, input, event: E("CLIENT_CLOSED"), guard: "", to: "OPTIONS", sends: ["CLIENT_CLOSED>options"], expect: { shuttingDown: false } },
    // Transmission over: the export is closed (finalized unless the client vanished), then flushed.
    { from: "TRANSMISSION", via: TO_TX, input, event: done("transmission", { finalize: true, reason: "client sent NBD_CMD_DISC" }), guard: "", to: "CLOSING", invokes: ["closeExport"], inputs: { closeExport: { finalize: true } }, expect: { finalize: true, reason: "client sent NBD_CMD_DISC" } },
    { from: "TRANSMISSION", via: TO_TX, input, event: done("transmission", { finalize: false, reason: "client closed the connection" }), guard: "", to: "CLOSING", invokes: ["closeExport"], inputs: { closeExport: { finalize: false } }, expect: { finalize: false } },
    { from: "TRANSMISSION", via: TO_TX, input, event: E("SHUTDOWN"), guard: "", to: "TRANSMISSION", sends: ["SHUTDOWN>transmission"] },
    { from: "TRANSMISSION", via: TO_TX, input, event: E("CLIENT_CLOSED"), guard: "", to: "TRANSMISSION", sends: ["CLIENT_CLOSED>transmission"] },
    { from: "CLOSING", via: TO_CLOSING, input, event: done("closeExport"), guard: "", to: "FLUSHING", invokes: ["flushSocket"] },
    // A failed close still ends the connection properly.
    { from: "CLOSING", via: TO_CLOSING, input, event: fail("closeExport"), guard: "", to: "FLUSHING", invokes: ["flushSocket"] },
    { from: "FLUSHING", via: TO_FLUSHING, input, event: done("flushSocket"), guard: "", ...closed, expect: { reason: "client sent unknown flags" } },
    { from: "FLUSHING", via: TO_FLUSHING, input, event: fail("flushSocket"), guard: "", ...closed },
    { from: "FLUSHING", via: TO_FLUSHING, input, event: E("CLIENT_CLOSED"), guard: "", ...closed },
  ]);

  it("CLOSING and FLUSHING do not stop for a shutdown (the teardown is already under way)", () => {
    for (const via of [TO_CLOSING, TO_FLUSHING]) {
      const { snapshot } = drive(connectionMachine, input, via);
      const [next, acts] = transition(connectionMachine, snapshot as never, { type: "SHUTDOWN" } as never);
      expect(next.value).toBe(snapshot.value);
      expect(acts).toEqual([]);
    }
  });

  it("no path from accept to close skips the teardown: every state but CLOSED has a way on, and CLOSED destroys the socket", () => {
    const closedNode = connectionMachine.root.states.CLOSED!;
    expect(closedNode.type).toBe("final");
    expect(closedNode.entry.map((a: unknown) => (a as { type?: string }).type ?? a)).toEqual(["logEnd", "destroySocket"]);
  });
});

// ------------------------------------------------------------------ options

const MAXOPT = 3;
const base = {
  optionCount: 0, maxOptions: MAXOPT, listed: 0, tls: "off", tlsActive: false, structuredReplies: false, extendedHeaders: false,
  noStructuredReplies: false, noMetaContexts: false, current: null, meta: null, chosen: null, shuttingDown: false,
};
const REQ = { tls: "require" };
const SR = { structuredReplies: true };
const EH = { extendedHeaders: true, structuredReplies: true };
const err = (e: string) => `replyError(NBD_REP_ERR_${e})`;
const CLOSED_BY = (reason: string) => ({ to: "CLOSED", expect: { reason }, output: { transmission: false, reason } });
/** An answered option re-enters AWAIT_OPTION: the next option is read, within a fresh OPTION_TIMEOUT. */
const NEXT = { to: "AWAIT_OPTION", reenter: true, invokes: ["readOption"], timers: ["OPTION_TIMEOUT"] };
const META = { exportName: "disk", contexts: [{ id: 1, name: C.BASE_ALLOCATION }] };

type Cur = CurrentOption;
const cur = (option: number, fields: Partial<Cur> = {}): Cur => ({ option, length: 0, ...fields });

/**
 * One option as readOption delivers it: its decoded event is raised, and
 * every candidate first takes the option (it becomes current and is
 * counted).
 */
function opt(type: string, current: Cur, guard: string, row: Partial<TRow>): TRow {
  const count = Number(row.ctx?.optionCount ?? 0) + 1;
  return {
    from: "AWAIT_OPTION",
    event: done("readOption", { type, current }),
    guard,
    covers: [`AWAIT_OPTION ${type} [${guard}]`, "AWAIT_OPTION done: readOption []"],
    raised: [type],
    to: "AWAIT_OPTION",
    ...row,
    expect: { optionCount: count, current, ...row.expect },
  };
}
const answered = (type: string, current: Cur, guard: string, effects: string[], row: Partial<TRow> = {}) =>
  opt(type, current, guard, { ...NEXT, effects, ...row });
const closes = (type: string, current: Cur, guard: string, reason: string, row: Partial<TRow> = {}) =>
  opt(type, current, guard, { ...CLOSED_BY(reason), ...row, expect: { reason, ...row.expect } });

const openInput = (o: Partial<{ name: string; keep: boolean; tls: boolean; structuredReplies: boolean; extendedHeaders: boolean; metaFor: string | null }>) =>
  ({ name: "disk", keep: false, tls: false, structuredReplies: false, extendedHeaders: false, metaFor: null, ...o });

interface OptionRule {
  option: number;
  /** Under --tls=require before STARTTLS succeeded: NBD_REP_ERR_TLS_REQD, allowed, or (no error reply exists) the session ends. */
  beforeTls: "refuse" | "allow" | "close";
  /** A payload the spec says is wrong: NBD_REP_ERR_INVALID, or (no error reply exists) the session ends. */
  malformed: "invalid" | "close";
  /** A well-formed instance. */
  ok: Cur;
  /** The option's own rules, after the common ones. */
  own(type: string, c: Cur): TRow[];
}

/** The spec's rules per option (doc/proto.md, "Option types"). */
const OPTION_RULES: Record<string, OptionRule> = {
  // "If the chosen export does not exist or requirements for the chosen export are not met ... the server MUST
  // terminate the session"; "a client that has used NBD_OPT_EXTENDED_HEADERS ... MUST NOT use this option".
  NBD_OPT_EXPORT_NAME: {
    option: C.NBD_OPT_EXPORT_NAME, beforeTls: "close", malformed: "close", ok: cur(1, { length: 4, name: "disk" }),
    own: (t, c) => [
      closes(t, c, "extendedHeadersOn", "NBD_OPT_EXPORT_NAME after extended headers", { ctx: EH }),
      opt(t, c, "", { to: "EXPORT_NAME", invokes: ["openExport"], inputs: { openExport: openInput({ keep: true }) } }),
      opt(t, c, "", { ctx: { ...REQ, tlsActive: true, ...SR }, to: "EXPORT_NAME", invokes: ["openExport"], inputs: { openExport: openInput({ keep: true, tls: true, structuredReplies: true }) } }),
    ],
  },
  // "The server MUST reply with NBD_REP_ACK" and close; allowed before TLS.
  NBD_OPT_ABORT: {
    option: C.NBD_OPT_ABORT, beforeTls: "allow", malformed: "invalid", ok: cur(2),
    own: (t, c) => [
      closes(t, c, "", "client sent NBD_OPT_ABORT", { effects: ["replyAck"] }),
      closes(t, c, "", "client sent NBD_OPT_ABORT", { ctx: REQ, effects: ["replyAck"] }),
    ],
  },
  // "If a client sends data with NBD_OPT_LIST ... MUST reply with NBD_REP_ERR_INVALID".
  NBD_OPT_LIST: {
    option: C.NBD_OPT_LIST, beforeTls: "refuse", malformed: "invalid", ok: cur(3),
    own: (t, c) => [
      answered(t, { ...c, length: 4 }, "nonEmptyPayload", [err("INVALID")]),
      opt(t, c, "", { to: "LIST_EXPORTS", invokes: ["listExports"], inputs: { listExports: { tls: false } } }),
      opt(t, c, "", { ctx: { tls: "on", tlsActive: true }, to: "LIST_EXPORTS", invokes: ["listExports"], inputs: { listExports: { tls: true } } }),
    ],
  },
  // Without TLS configured: NBD_REP_ERR_POLICY; inside TLS already: NBD_REP_ERR_INVALID; else ACK, then the
  // TLS handshake (the ACK leaves before it: the ACK is the state's entry).
  NBD_OPT_STARTTLS: {
    option: C.NBD_OPT_STARTTLS, beforeTls: "allow", malformed: "invalid", ok: cur(5),
    own: (t, c) => [
      answered(t, { ...c, length: 4 }, "nonEmptyPayload", [err("INVALID")], { ctx: { tls: "on" } }),
      answered(t, c, "tlsUnavailable", [err("POLICY")]),
      answered(t, c, "tlsAlreadyActive", [err("INVALID")], { ctx: { tls: "on", tlsActive: true } }),
      opt(t, c, "", { ctx: { tls: "on" }, to: "STARTTLS", effects: ["replyAck"], invokes: ["upgradeTls"] }),
      opt(t, c, "", { ctx: REQ, to: "STARTTLS", effects: ["replyAck"], invokes: ["upgradeTls"] }),
    ],
  },
  NBD_OPT_INFO: {
    option: C.NBD_OPT_INFO, beforeTls: "refuse", malformed: "invalid", ok: cur(6, { length: 10, name: "disk", infos: [C.NBD_INFO_BLOCK_SIZE] }),
    own: (t, c) => [
      opt(t, c, "", { to: "OPEN_EXPORT_INFO", invokes: ["openExport"], inputs: { openExport: openInput({}) } }),
      opt(t, c, "", { ctx: { ...EH, meta: META }, to: "OPEN_EXPORT_INFO", invokes: ["openExport"], inputs: { openExport: openInput({ structuredReplies: true, extendedHeaders: true, metaFor: "disk" }) } }),
    ],
  },
  NBD_OPT_GO: {
    option: C.NBD_OPT_GO, beforeTls: "refuse", malformed: "invalid", ok: cur(7, { length: 10, name: "disk", infos: [C.NBD_INFO_BLOCK_SIZE] }),
    own: (t, c) => [
      opt(t, c, "", { to: "OPEN_EXPORT_GO", invokes: ["openExport"], inputs: { openExport: openInput({ keep: true }) } }),
      opt(t, c, "", { ctx: { ...REQ, tlsActive: true, ...SR, meta: META }, to: "OPEN_EXPORT_GO", invokes: ["openExport"], inputs: { openExport: openInput({ keep: true, tls: true, structuredReplies: true, metaFor: "disk" }) } }),
    ],
  },
  // "The client MUST NOT send any additional data"; after extended headers: NBD_REP_ERR_EXT_HEADER_REQD.
  NBD_OPT_STRUCTURED_REPLY: {
    option: C.NBD_OPT_STRUCTURED_REPLY, beforeTls: "refuse", malformed: "invalid", ok: cur(8),
    own: (t, c) => [
      answered(t, { ...c, length: 2 }, "nonEmptyPayload", [err("INVALID")], { expect: { structuredReplies: false } }),
      answered(t, c, "extendedHeadersOn", [err("EXT_HEADER_REQD")], { ctx: EH, expect: EH }),
      answered(t, c, "structuredRepliesRefused", [err("UNSUP")], { ctx: { noStructuredReplies: true }, expect: { structuredReplies: false } }),
      answered(t, c, "", ["replyAck"], { expect: { structuredReplies: true } }),
    ],
  },
  // "MUST NOT be requested unless structured replies or extended headers have been negotiated first ... SHOULD
  // send NBD_REP_ERR_INVALID". LIST changes no selection.
  NBD_OPT_LIST_META_CONTEXT: {
    option: C.NBD_OPT_LIST_META_CONTEXT, beforeTls: "refuse", malformed: "invalid", ok: cur(9, { length: 27, exportName: "disk", queries: [C.BASE_ALLOCATION] }),
    own: (t, c) => [
      answered(t, c, "metaContextsRefused", [err("UNSUP")], { ctx: { ...SR, noMetaContexts: true } }),
      answered(t, c, "structuredRepliesOff", [err("INVALID")]),
      opt(t, c, "", { ctx: { ...SR, meta: META }, to: "META_CONTEXTS", invokes: ["metaContexts"], inputs: { metaContexts: { exportName: "disk" } }, expect: { meta: META } }),
    ],
  },
  // SET "replaces all previously-set metadata contexts (including when this command fails)".
  NBD_OPT_SET_META_CONTEXT: {
    option: C.NBD_OPT_SET_META_CONTEXT, beforeTls: "refuse", malformed: "invalid", ok: cur(10, { length: 27, exportName: "disk", queries: [C.BASE_ALLOCATION] }),
    own: (t, c) => [
      answered(t, c, "metaContextsRefused", [err("UNSUP")], { ctx: { ...SR, noMetaContexts: true } }),
      answered(t, c, "structuredRepliesOff", [err("INVALID")]),
      opt(t, c, "", { ctx: { ...SR, meta: META }, to: "META_CONTEXTS", invokes: ["metaContexts"], inputs: { metaContexts: { exportName: "disk" } }, expect: { meta: null } }),
      // A refused SET replaces the selection too: with none.
      answered(t, { ...c, malformed: "a query longer than 4096 bytes" }, "malformed", ["replyMalformed"], { ctx: { ...SR, meta: META }, expect: { meta: null } }),
    ],
  },
  // "The client MUST NOT send any additional data"; it implies structured replies; a second one is refused;
  // --no-sr turns it off too.
  NBD_OPT_EXTENDED_HEADERS: {
    option: C.NBD_OPT_EXTENDED_HEADERS, beforeTls: "refuse", malformed: "invalid", ok: cur(11),
    own: (t, c) => [
      answered(t, { ...c, length: 4 }, "nonEmptyPayload", [err("INVALID")], { expect: { extendedHeaders: false } }),
      answered(t, c, "extendedHeadersOn", [err("INVALID")], { ctx: EH, expect: EH }),
      answered(t, c, "extendedHeadersRefused", [err("UNSUP")], { ctx: { noStructuredReplies: true }, expect: { extendedHeaders: false, structuredReplies: false } }),
      answered(t, c, "", ["replyAck"], { expect: EH }),
    ],
  },
};

/** The rules every option meets first, in this order: the budget, TLS required, a malformed payload. */
function commonRows(type: string, r: OptionRule): TRow[] {
  const c = r.ok;
  const bad = { ...c, malformed: "the payload is wrong" };
  const rows = [closes(type, c, "optionBudgetExhausted", "too many options", { ctx: { optionCount: MAXOPT } })];
  if (r.beforeTls === "refuse") {
    rows.push(answered(type, c, "tlsRequired", [err("TLS_REQD")], { ctx: REQ }));
    // TLS first: a malformed payload is not looked at before TLS.
    rows.push(answered(type, bad, "tlsRequired", [err("TLS_REQD")], { ctx: REQ }));
  }
  if (r.beforeTls === "close") rows.push(closes(type, c, "tlsRequired", `${type} before TLS`, { ctx: REQ }));
  if (r.malformed === "invalid") rows.push(answered(type, bad, "malformed", ["replyMalformed"]));
  else rows.push(closes(type, bad, "malformed", `malformed ${type}`));
  return rows;
}

const UNKNOWN = cur(77);
const TOO_LARGE = cur(C.NBD_OPT_LIST, { length: C.MAX_OPTION_LENGTH + 1 });
const awaitRows: TRow[] = [
  // "the server MUST reply with NBD_REP_ERR_UNSUP" to an option it does not know; it counts, and TLS comes first.
  closes("NBD_OPT_UNKNOWN", UNKNOWN, "optionBudgetExhausted", "too many options", { ctx: { optionCount: MAXOPT } }),
  answered("NBD_OPT_UNKNOWN", UNKNOWN, "tlsRequired", [err("TLS_REQD")], { ctx: REQ }),
  answered("NBD_OPT_UNKNOWN", UNKNOWN, "", [err("UNSUP")]),
  // Each export of the largest listing sent allows 4 more options (nbdinfo --list asks per export).
  answered("NBD_OPT_UNKNOWN", UNKNOWN, "", [err("UNSUP")], { ctx: { optionCount: MAXOPT + 3, listed: 1 } }),
  closes("NBD_OPT_UNKNOWN", UNKNOWN, "optionBudgetExhausted", "too many options", { ctx: { optionCount: MAXOPT + 4, listed: 1 } }),
  // A payload over the limit was skipped unread: NBD_REP_ERR_TOO_BIG, even before TLS.
  closes("OPTION_TOO_LARGE", TOO_LARGE, "optionBudgetExhausted", "too many options", { ctx: { optionCount: MAXOPT } }),
  answered("OPTION_TOO_LARGE", TOO_LARGE, "", [err("TOO_BIG")]),
  answered("OPTION_TOO_LARGE", TOO_LARGE, "", [err("TOO_BIG")], { ctx: REQ }),
  // The frame itself: the client gone (no reply, no error line), or not an option frame at all.
  { from: "AWAIT_OPTION", event: fail("readOption", new ClientGone()), guard: "clientGone", ...CLOSED_BY("client closed the connection") },
  { from: "AWAIT_OPTION", event: fail("readOption", new WireError("bad option magic")), guard: "", ...CLOSED_BY("bad option frame: bad option magic") },
  // "the server MAY ... disconnect" a client that stalls.
  { from: "AWAIT_OPTION", event: after("OPTION_TIMEOUT", "options", "AWAIT_OPTION"), guard: "", ...CLOSED_BY("option phase timed out") },
  // Between options a shutdown just closes ("the server ... SHOULD ... NBD_REP_ERR_SHUTDOWN" needs an option to answer).
  { from: "AWAIT_OPTION", event: E("SHUTDOWN"), guard: "", ...CLOSED_BY("the server is shutting down") },
];

const LIST_C = cur(C.NBD_OPT_LIST);
const SET_C = cur(C.NBD_OPT_SET_META_CONTEXT, { exportName: "disk", queries: [C.BASE_ALLOCATION] });
const LISTMC_C = cur(C.NBD_OPT_LIST_META_CONTEXT, { exportName: "disk", queries: ["base:"] });
const INFO_C = cur(C.NBD_OPT_INFO, { name: "disk", infos: [] });
const GO_C = cur(C.NBD_OPT_GO, { name: "disk", infos: [] });
const DEFAULT_GO_C = cur(C.NBD_OPT_GO, { name: "", infos: [] });
const EXPORT_NAME_C = cur(C.NBD_OPT_EXPORT_NAME, { name: "disk" });
const STARTTLS_C = cur(C.NBD_OPT_STARTTLS);
const INFO = { name: "disk", size: 1 << 20, flags: 1, description: null, blockSize: null, canWrite: true, canFua: false };
const OPENED = { tag: "the context chain" };
const opened = (asked = "disk") => done("openExport", { info: INFO, opened: OPENED, asked });
const inTx = (o: Record<string, unknown>) => ({ transmission: true, chosen: { opened: OPENED, info: INFO, asked: "disk" }, structuredReplies: false, extendedHeaders: false, metaContexts: [], reason: undefined, ...o });
const SHUT = "the server is shutting down";

/** Every state an option adds waits for its effect; a shutdown lets it finish; the client going away ends it. */
const waiting = (from: string, current: Cur): TRow[] => [
  { from, ctx: { current }, event: E("SHUTDOWN"), guard: "", to: from, expect: { shuttingDown: true } },
  { from, ctx: { current }, event: E("CLIENT_CLOSED"), guard: "", ...CLOSED_BY("client closed the connection") },
];

const stateRows: TRow[] = [
  // LIST: "zero or more NBD_REP_SERVER replies, one for each export, followed by NBD_REP_ACK or an error".
  { from: "LIST_EXPORTS", ctx: { current: LIST_C, optionCount: 1 }, event: done("listExports", [{ name: "a" }, { name: "b" }]), guard: "", ...NEXT, reenter: false, effects: ["replyExportList"], expect: { listed: 2, optionCount: 1 } },
  { from: "LIST_EXPORTS", ctx: { current: LIST_C, listed: 3 }, event: done("listExports", [{ name: "a" }]), guard: "", ...NEXT, reenter: false, effects: ["replyExportList"], expect: { listed: 3 } },
  // Refused by policy (EPERM): NBD_REP_ERR_POLICY; any other failure NBD_REP_ERR_PLATFORM (the option was fine).
  { from: "LIST_EXPORTS", ctx: { current: LIST_C }, event: fail("listExports", new NbdError(C.NBD_EPERM, "listing is not allowed")), guard: "listRefusedByPolicy", ...NEXT, reenter: false, effects: [err("POLICY")], expect: { listed: 0 } },
  { from: "LIST_EXPORTS", ctx: { current: LIST_C }, event: fail("listExports", new Error("disk on fire")), guard: "", ...NEXT, reenter: false, effects: [err("PLATFORM")] },
  // A shutdown during an option: it is answered, then the connection closes.
  { from: "LIST_EXPORTS", ctx: { current: LIST_C, shuttingDown: true }, event: done("listExports", [{ name: "a" }]), covers: ["LIST_EXPORTS done: listExports []", "AWAIT_OPTION always [shuttingDown]"], to: "CLOSED", effects: ["replyExportList"], invokes: ["readOption"], timers: ["OPTION_TIMEOUT"], output: { transmission: false, reason: SHUT } },
  ...waiting("LIST_EXPORTS", LIST_C),

  // SET: the matches become the selection, numbered from 1; a namespace query selects nothing (LIST only);
  // "If zero queries are sent, the server MUST select no metadata contexts".
  { from: "META_CONTEXTS", ctx: { ...SR, current: SET_C }, event: done("metaContexts", ["base:allocation", "qemu:dirty-bitmap:b"]), guard: "", ...NEXT, reenter: false, effects: ["replyMetaContexts"], expect: { meta: { exportName: "disk", contexts: [{ id: 1, name: C.BASE_ALLOCATION }] } } },
  { from: "META_CONTEXTS", ctx: { ...SR, current: { ...SET_C, queries: ["qemu:dirty-bitmap:b", "base:allocation", "nope:x"] } }, event: done("metaContexts", ["base:allocation", "qemu:dirty-bitmap:b"]), guard: "", ...NEXT, reenter: false, effects: ["replyMetaContexts"], expect: { meta: { exportName: "disk", contexts: [{ id: 1, name: C.BASE_ALLOCATION }, { id: 2, name: "qemu:dirty-bitmap:b" }] } } },
  { from: "META_CONTEXTS", ctx: { ...SR, current: { ...SET_C, queries: ["base:"] } }, event: done("metaContexts", ["base:allocation"]), guard: "", ...NEXT, reenter: false, effects: ["replyMetaContexts"], expect: { meta: { exportName: "disk", contexts: [] } } },
  { from: "META_CONTEXTS", ctx: { ...SR, current: { ...SET_C, queries: [] } }, event: done("metaContexts", ["base:allocation"]), guard: "", ...NEXT, reenter: false, effects: ["replyMetaContexts"], expect: { meta: { exportName: "disk", contexts: [] } } },
  // LIST leaves the selection as it was.
  { from: "META_CONTEXTS", ctx: { ...SR, current: LISTMC_C, meta: META }, event: done("metaContexts", ["base:allocation"]), guard: "", ...NEXT, reenter: false, effects: ["replyMetaContexts"], expect: { meta: META } },
  { from: "META_CONTEXTS", ctx: { ...SR, current: SET_C }, event: fail("metaContexts"), guard: "", ...NEXT, reenter: false, effects: [err("PLATFORM")], expect: { meta: null } },
  ...waiting("META_CONTEXTS", SET_C),

  // TLS up: what was negotiated in clear text may have been injected; it is forgotten (CVE-2021-3716), and
  // "If the client requests NBD_OPT_STARTTLS after this option, it MUST renegotiate structured replies".
  { from: "STARTTLS", ctx: { tls: "on", ...EH, meta: META, current: STARTTLS_C }, event: done("upgradeTls"), guard: "", ...NEXT, reenter: false, expect: { tlsActive: true, structuredReplies: false, extendedHeaders: false, meta: null } },
  // A failed TLS handshake: there is no way back to clear text.
  { from: "STARTTLS", ctx: { tls: "require", current: STARTTLS_C }, event: fail("upgradeTls"), guard: "", ...CLOSED_BY("TLS handshake failed"), expect: { tlsActive: false, reason: "TLS handshake failed" } },
  ...waiting("STARTTLS", STARTTLS_C),

  // INFO: what GO would say, and nothing is held.
  { from: "OPEN_EXPORT_INFO", ctx: { current: INFO_C }, event: done("openExport", { info: INFO, opened: null, asked: "disk" }), guard: "", ...NEXT, reenter: false, effects: ["replyInfo"], expect: { chosen: null } },
  // An export that cannot be opened: NBD_REP_ERR_UNKNOWN, and the client may go on.
  { from: "OPEN_EXPORT_INFO", ctx: { current: INFO_C }, event: fail("openExport", new Error("no such export")), guard: "", ...NEXT, reenter: false, effects: [err("UNKNOWN")] },
  { from: "OPEN_EXPORT_INFO", ctx: { current: INFO_C, shuttingDown: true }, event: done("openExport", { info: INFO, opened: null, asked: "disk" }), covers: ["OPEN_EXPORT_INFO done: openExport []", "AWAIT_OPTION always [shuttingDown]"], to: "CLOSED", effects: ["replyInfo"], invokes: ["readOption"], timers: ["OPTION_TIMEOUT"], output: { transmission: false, reason: SHUT } },
  ...waiting("OPEN_EXPORT_INFO", INFO_C),

  // GO: on NBD_REP_ACK "the client and the server both immediately enter the transmission phase".
  { from: "OPEN_EXPORT_GO", ctx: { current: GO_C }, event: opened(), guard: "", to: "TRANSMISSION", effects: ["replyInfo"], expect: { chosen: { opened: OPENED, info: INFO, asked: "disk" } }, output: inTx({}) },
  // The meta contexts selected for the export chosen (by its name as asked or as canonical) go along ...
  { from: "OPEN_EXPORT_GO", ctx: { current: GO_C, ...SR, meta: META }, event: opened(), guard: "", to: "TRANSMISSION", effects: ["replyInfo"], output: inTx({ structuredReplies: true, metaContexts: META.contexts }) },
  { from: "OPEN_EXPORT_GO", ctx: { current: DEFAULT_GO_C, ...EH, meta: META }, event: opened(""), guard: "", to: "TRANSMISSION", effects: ["replyInfo"], output: inTx({ chosen: { opened: OPENED, info: INFO, asked: "" }, structuredReplies: true, extendedHeaders: true, metaContexts: META.contexts }) },
  // ... those set for another export do not.
  { from: "OPEN_EXPORT_GO", ctx: { current: GO_C, ...SR, meta: { ...META, exportName: "other" } }, event: opened(), guard: "", to: "TRANSMISSION", effects: ["replyInfo"], output: inTx({ structuredReplies: true, metaContexts: [] }) },
  // A GO in progress when the server shuts down is still answered and entered (transmission then shuts down).
  { from: "OPEN_EXPORT_GO", ctx: { current: GO_C, shuttingDown: true }, event: opened(), guard: "", to: "TRANSMISSION", effects: ["replyInfo"], output: inTx({}) },
  { from: "OPEN_EXPORT_GO", ctx: { current: GO_C }, event: fail("openExport", new Error("no such export")), guard: "", ...NEXT, reenter: false, effects: [err("UNKNOWN")], expect: { chosen: null } },
  ...waiting("OPEN_EXPORT_GO", GO_C),

  { from: "EXPORT_NAME", ctx: { current: EXPORT_NAME_C }, event: opened(), guard: "", to: "TRANSMISSION", effects: ["replyExportName"], output: inTx({}) },
  // No error reply exists for EXPORT_NAME: the session ends.
  { from: "EXPORT_NAME", ctx: { current: EXPORT_NAME_C }, event: fail("openExport", new Error("no such export")), guard: "", ...CLOSED_BY("unknown export") },
  ...waiting("EXPORT_NAME", EXPORT_NAME_C),
];

describe("optionsMachine", () => {
  it("every option record has its rules in this test (a new option needs its own)", () => {
    expect(builtinOptions.map((r) => r.event).sort()).toEqual(Object.keys(OPTION_RULES).sort());
    for (const r of builtinOptions) expect(r.option, r.event).toBe(OPTION_RULES[r.event]!.option);
  });

  const optionRows = builtinOptions.flatMap((r) => {
    const rule = OPTION_RULES[r.event];
    return rule ? [...commonRows(r.event, rule), ...rule.own(r.event, rule.ok)] : [];
  });
  machineTable(optionsMachine, base, [...optionRows, ...awaitRows, ...stateRows]);

  it("input: the defaults (MAX_OPTIONS, no TLS, everything offered), and overrides", () => {
    expect(drive(optionsMachine, {}, []).snapshot.context).toEqual({ ...base, maxOptions: C.MAX_OPTIONS });
    const d = drive(optionsMachine, { maxOptions: 3, tls: "require", noStructuredReplies: true, noMetaContexts: true }, []);
    expect(d.snapshot.context).toMatchObject({ maxOptions: 3, tls: "require", tlsActive: false, noStructuredReplies: true, noMetaContexts: true });
    expect(d.snapshot.value).toBe("AWAIT_OPTION");
    expect(d.decided[0]).toMatchObject({ invokes: ["readOption"], timers: ["OPTION_TIMEOUT"] });
  });

  const send = (type: string, current: Cur) => done("readOption", { type, current });
  const effects = (ds: ReturnType<typeof decided>[]) => ds.flatMap((d) => d.effects);

  it("every option counts toward the budget, errors included", () => {
    const { snapshot, decided: ds } = drive(optionsMachine, { maxOptions: 2 }, [
      send("NBD_OPT_UNKNOWN", UNKNOWN), send("OPTION_TOO_LARGE", TOO_LARGE), send("NBD_OPT_LIST", LIST_C),
    ]);
    expect(effects(ds)).toEqual([err("UNSUP"), err("TOO_BIG")]);
    expect(snapshot.output).toMatchObject({ transmission: false, reason: "too many options" });
  });

  it("a full negotiation: structured replies, a meta context, INFO, then GO", () => {
    const { snapshot, decided: ds } = drive(optionsMachine, {}, [
      send("NBD_OPT_STRUCTURED_REPLY", cur(8)), send("NBD_OPT_SET_META_CONTEXT", SET_C), done("metaContexts", [C.BASE_ALLOCATION]),
      send("NBD_OPT_INFO", INFO_C), done("openExport", { info: INFO, opened: null, asked: "disk" }),
      send("NBD_OPT_GO", GO_C), opened(),
    ]);
    expect(effects(ds)).toEqual(["replyAck", "replyMetaContexts", "replyInfo", "replyInfo"]);
    expect(snapshot.status).toBe("done");
    expect(snapshot.context.optionCount).toBe(4);
    expect(snapshot.output).toEqual(inTx({ structuredReplies: true, metaContexts: META.contexts }));
  });

  it("a failed GO leaves the client haggling, and a later close is not transmission", () => {
    const { snapshot } = drive(optionsMachine, {}, [send("NBD_OPT_GO", GO_C), fail("openExport"), fail("readOption", new ClientGone())]);
    expect(snapshot.output).toMatchObject({ transmission: false, chosen: null, reason: "client closed the connection" });
  });

  it("error replies carry a message for the client", () => {
    const start = restore(optionsMachine, "AWAIT_OPTION", { ...base, tls: "require" });
    const [, acts] = transition(optionsMachine, start as never, send("NBD_OPT_GO", DEFAULT_GO_C) as never);
    const reply = (acts as { type: string; params?: { message?: string } }[]).find((a) => a.type === "replyError");
    expect(reply?.params?.message).toMatch(/TLS is required/);
    const failed = restore(optionsMachine, "OPEN_EXPORT_GO", { ...base, current: GO_C });
    const [, acts2] = transition(optionsMachine, failed as never, fail("openExport", new Error("no such export")) as never);
    const reply2 = (acts2 as { type: string; params?: { message?: string } }[]).find((a) => a.type === "replyError");
    expect(reply2?.params?.message).toBe("disk: no such export");
  });

  it("events a state does not name are ignored (an option frame is never read while an option is in progress)", () => {
    const cases: [string, Cur | null, { type: string }][] = [
      ["AWAIT_OPTION", null, done("openExport", {})],
      ["AWAIT_OPTION", null, E("CLIENT_CLOSED")],
      ["STARTTLS", STARTTLS_C, send("NBD_OPT_GO", GO_C)],
      ["OPEN_EXPORT_GO", GO_C, send("NBD_OPT_LIST", LIST_C)],
      ["LIST_EXPORTS", LIST_C, after("OPTION_TIMEOUT", "options", "AWAIT_OPTION")],
      ["META_CONTEXTS", SET_C, done("listExports", [])],
    ];
    for (const [from, current, ev] of cases) {
      const start = restore(optionsMachine, from, { ...base, current });
      const [next, acts] = transition(optionsMachine, start as never, ev as never);
      expect(next.value, `${from} + ${ev.type}`).toBe(from);
      expect(next.context).toEqual(start.context);
      expect(acts, `${from} + ${ev.type}`).toEqual([]);
    }
  });
});
