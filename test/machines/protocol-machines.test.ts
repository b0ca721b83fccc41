// Every transition and guard of the handshake, options and transmission
// machines, run through a real actor with spied side effects (see
// actor-table.ts). The server machine is in protocol-server.test.ts.
import { describe, expect, it } from "vitest";
import { createActor } from "xstate";
import { handshakeMachine } from "../../src/machines/handshake.js";
import { optionsMachine } from "../../src/machines/options.js";
import { transmissionMachine } from "../../src/machines/transmission.js";
import { MAX_OPTIONS } from "../../src/protocol/constants.js";
import { actorAt, actorTable, spied, type ActorRow } from "./actor-table.js";

// ---------------------------------------------------------------- handshake

const closedBy = (reason: string) => ({ ok: false, reason });

describe("handshakeMachine", () => {
  actorTable(handshakeMachine, { clientFlags: 0, noZeroes: false }, [
    { from: "SEND_GREETING", event: { type: "always" }, guard: "", to: "AWAIT_CLIENT_FLAGS", actions: ["sendGreeting"] },
    { from: "AWAIT_CLIENT_FLAGS", event: { type: "CLIENT_FLAGS", flags: 3 }, guard: "", to: "NEGOTIATING", expect: { clientFlags: 3, noZeroes: true }, output: { ok: true, noZeroes: true, reason: undefined } },
    { from: "AWAIT_CLIENT_FLAGS", event: { type: "CLIENT_FLAGS", flags: 1 }, guard: "", to: "NEGOTIATING", expect: { clientFlags: 1, noZeroes: false }, output: { ok: true, noZeroes: false } },
    { from: "AWAIT_CLIENT_FLAGS", event: { type: "CLIENT_FLAGS", flags: 0 }, guard: "", to: "NEGOTIATING", expect: { clientFlags: 0 }, output: { ok: true, noZeroes: false } },
    { from: "AWAIT_CLIENT_FLAGS", event: { type: "CLIENT_FLAGS", flags: 4 }, guard: "unknownClientFlags", to: "REJECTED", expect: { clientFlags: 0 }, actions: ["closeConnection"], output: closedBy("client sent unknown flags") },
    { from: "AWAIT_CLIENT_FLAGS", event: { type: "CLIENT_FLAGS", flags: 0x80000003 }, guard: "unknownClientFlags", to: "REJECTED", actions: ["closeConnection"], output: closedBy("client sent unknown flags") },
    { from: "AWAIT_CLIENT_FLAGS", event: { type: "TIMEOUT" }, guard: "", to: "REJECTED", actions: ["closeConnection"], output: closedBy("handshake timed out") },
    // The socket is already gone: nothing to close.
    { from: "AWAIT_CLIENT_FLAGS", event: { type: "CLIENT_CLOSED" }, guard: "", to: "REJECTED", output: closedBy("client closed the connection") },
  ]);
});

// ------------------------------------------------------------------ options

const base = { optionCount: 0, maxOptions: 3, tls: "off", tlsActive: false, structuredReplies: false, go: false, exportName: "" };
const FULL = { optionCount: 3 }; // maxOptions 3: the budget is spent
const REQ = { tls: "require" };
const SR = { structuredReplies: true };
const E = (type: string, extra: Record<string, unknown> = {}) => ({ type, ...extra });
const err = (e: string) => `replyError(NBD_REP_ERR_${e})`;
const closed = (reason: string) => ({ transmission: false, reason });
const budget = (event: ActorRow["event"]): ActorRow =>
  ({ from: "AWAIT_OPTION", ctx: FULL, event, guard: "optionBudgetExhausted", to: "CLOSED", expect: { optionCount: 3 }, actions: ["closeConnection"], output: closed("too many options") });
/** An option answered in place: counted, one reply, still AWAIT_OPTION. */
const answered = (event: ActorRow["event"], guard: string, actions: string[], ctx?: Record<string, unknown>): ActorRow =>
  ({ from: "AWAIT_OPTION", ctx, event, guard, to: "AWAIT_OPTION", expect: { optionCount: (Number(ctx?.optionCount) || 0) + 1 }, actions });
const GO = { name: "disk", infos: [3] };
const META = { exportName: "", queries: ["base:allocation"] };
const BAD = { malformed: true };
const CC = "client closed the connection";

const optionRows: ActorRow[] = [
  // ABORT: allowed even before TLS.
  budget(E("NBD_OPT_ABORT")),
  { from: "AWAIT_OPTION", event: E("NBD_OPT_ABORT"), guard: "", to: "CLOSED", expect: { optionCount: 1 }, actions: ["replyAck", "closeConnection"], output: closed("client sent NBD_OPT_ABORT") },
  { from: "AWAIT_OPTION", ctx: REQ, event: E("NBD_OPT_ABORT"), guard: "", to: "CLOSED", actions: ["replyAck", "closeConnection"], output: closed("client sent NBD_OPT_ABORT") },
  // STARTTLS
  budget(E("NBD_OPT_STARTTLS", { length: 0 })),
  answered(E("NBD_OPT_STARTTLS", { length: 4 }), "nonEmptyPayload", [err("INVALID")], { tls: "on" }),
  answered(E("NBD_OPT_STARTTLS", { length: 0 }), "tlsUnavailable", [err("POLICY")]),
  answered(E("NBD_OPT_STARTTLS", { length: 0 }), "tlsAlreadyActive", [err("INVALID")], { tls: "on", tlsActive: true }),
  { from: "AWAIT_OPTION", ctx: { tls: "on" }, event: E("NBD_OPT_STARTTLS", { length: 0 }), guard: "", to: "STARTTLS", expect: { optionCount: 1 }, actions: ["startTls"] },
  { from: "AWAIT_OPTION", ctx: REQ, event: E("NBD_OPT_STARTTLS", { length: 0 }), guard: "", to: "STARTTLS", expect: { optionCount: 1 }, actions: ["startTls"] },
  // EXPORT_NAME: no error reply exists, so refusals close.
  budget(E("NBD_OPT_EXPORT_NAME", { name: "disk" })),
  { from: "AWAIT_OPTION", ctx: REQ, event: E("NBD_OPT_EXPORT_NAME", { name: "disk" }), guard: "tlsRequired", to: "CLOSED", expect: { optionCount: 0 }, actions: ["closeConnection"], output: closed("NBD_OPT_EXPORT_NAME before TLS") },
  { from: "AWAIT_OPTION", event: E("NBD_OPT_EXPORT_NAME", { name: "disk" }), guard: "", to: "EXPORT_NAME", expect: { optionCount: 1, go: true, exportName: "disk" }, actions: ["openExport"] },
  { from: "AWAIT_OPTION", ctx: { ...REQ, tlsActive: true }, event: E("NBD_OPT_EXPORT_NAME", { name: "" }), guard: "", to: "EXPORT_NAME", expect: { go: true, exportName: "" }, actions: ["openExport"] },
  // LIST
  budget(E("NBD_OPT_LIST", { length: 0 })),
  answered(E("NBD_OPT_LIST", { length: 0 }), "tlsRequired", [err("TLS_REQD")], REQ),
  answered(E("NBD_OPT_LIST", { length: 4 }), "nonEmptyPayload", [err("INVALID")]),
  { from: "AWAIT_OPTION", event: E("NBD_OPT_LIST", { length: 0 }), guard: "", to: "LIST_EXPORTS", expect: { optionCount: 1 }, actions: ["listExports"] },
  // INFO / GO
  ...(["NBD_OPT_INFO", "NBD_OPT_GO"] as const).flatMap((t): ActorRow[] => [
    budget(E(t, GO)),
    answered(E(t, GO), "tlsRequired", [err("TLS_REQD")], REQ),
    answered(E(t, { ...GO, ...BAD }), "tlsRequired", [err("TLS_REQD")], REQ),
    answered(E(t, { name: "", infos: [], ...BAD }), "malformed", [err("INVALID")]),
    { from: "AWAIT_OPTION", ctx: { optionCount: 2 }, event: E(t, GO), guard: "", to: "OPEN_EXPORT", expect: { optionCount: t === "NBD_OPT_GO" ? 3 : 2, go: t === "NBD_OPT_GO", exportName: "disk" }, actions: ["openExport"] },
  ]),
  // STRUCTURED_REPLY
  budget(E("NBD_OPT_STRUCTURED_REPLY", { length: 0 })),
  answered(E("NBD_OPT_STRUCTURED_REPLY", { length: 0 }), "tlsRequired", [err("TLS_REQD")], REQ),
  { ...answered(E("NBD_OPT_STRUCTURED_REPLY", { length: 2 }), "nonEmptyPayload", [err("INVALID")]), expect: { optionCount: 1, structuredReplies: false } },
  { ...answered(E("NBD_OPT_STRUCTURED_REPLY", { length: 0 }), "", ["replyAck"]), expect: { optionCount: 1, structuredReplies: true } },
  // LIST_META_CONTEXT / SET_META_CONTEXT
  ...(["NBD_OPT_LIST_META_CONTEXT", "NBD_OPT_SET_META_CONTEXT"] as const).flatMap((t): ActorRow[] => [
    budget(E(t, META)),
    answered(E(t, META), "tlsRequired", [err("TLS_REQD")], { ...REQ, ...SR }),
    answered(E(t, META), "structuredRepliesOff", [err("INVALID")]),
    answered(E(t, { exportName: "", queries: [], ...BAD }), "malformed", [err("INVALID")], SR),
    answered(E(t, META), "", [`replyMetaContexts(${t === "NBD_OPT_SET_META_CONTEXT" ? "set" : "list"})`], SR),
  ]),
  // Unknown and oversized options
  budget(E("NBD_OPT_UNKNOWN", { option: 11 })),
  answered(E("NBD_OPT_UNKNOWN", { option: 11 }), "tlsRequired", [err("TLS_REQD")], REQ),
  answered(E("NBD_OPT_UNKNOWN", { option: 11 }), "", [err("UNSUP")]),
  budget(E("OPTION_TOO_LARGE", { option: 3 })),
  answered(E("OPTION_TOO_LARGE", { option: 3 }), "", [err("TOO_BIG")], { optionCount: 2 }),
  answered(E("OPTION_TOO_LARGE", { option: 3 }), "", [err("TOO_BIG")], REQ),
  // The connection itself
  { from: "AWAIT_OPTION", event: E("TIMEOUT"), guard: "", to: "CLOSED", actions: ["closeConnection"], output: closed("option phase timed out") },
  { from: "AWAIT_OPTION", ctx: { go: true }, event: E("CLIENT_CLOSED"), guard: "", to: "CLOSED", output: closed(CC) },
  // LIST_EXPORTS: the runner's report
  { from: "LIST_EXPORTS", ctx: { optionCount: 1 }, event: E("EXPORTS_LISTED"), guard: "", to: "AWAIT_OPTION", expect: { optionCount: 1 } },
  { from: "LIST_EXPORTS", event: E("LIST_FAILED", { error: "NBD_REP_ERR_PLATFORM", message: "no" }), guard: "", to: "AWAIT_OPTION", actions: [err("PLATFORM")] },
  { from: "LIST_EXPORTS", event: E("CLIENT_CLOSED"), guard: "", to: "CLOSED", output: closed(CC) },
  // OPEN_EXPORT
  { from: "OPEN_EXPORT", ctx: { go: true, exportName: "disk", ...SR }, event: E("EXPORT_READY"), guard: "isGo", to: "TRANSMISSION", actions: ["replyInfo"], output: { transmission: true, exportName: "disk", structuredReplies: true, reason: undefined } },
  { from: "OPEN_EXPORT", ctx: { exportName: "disk" }, event: E("EXPORT_READY"), guard: "", to: "AWAIT_OPTION", actions: ["replyInfo", "closeExport"] },
  { from: "OPEN_EXPORT", ctx: { go: true }, event: E("EXPORT_FAILED", { error: "NBD_REP_ERR_UNKNOWN", message: "no" }), guard: "", to: "AWAIT_OPTION", actions: [err("UNKNOWN")] },
  // A client gone while its GO is being opened must not come out as transmission.
  { from: "OPEN_EXPORT", ctx: { go: true, exportName: "disk" }, event: E("CLIENT_CLOSED"), guard: "", to: "CLOSED", output: closed(CC) },
  // EXPORT_NAME
  { from: "EXPORT_NAME", ctx: { go: true, exportName: "disk" }, event: E("EXPORT_READY"), guard: "", to: "TRANSMISSION", actions: ["replyExportName"], output: { transmission: true, exportName: "disk", structuredReplies: false } },
  { from: "EXPORT_NAME", ctx: { go: true }, event: E("EXPORT_FAILED", { error: "NBD_REP_ERR_UNKNOWN", message: "no" }), guard: "", to: "CLOSED", actions: ["closeConnection"], output: closed("unknown export") },
  { from: "EXPORT_NAME", ctx: { go: true, exportName: "disk" }, event: E("CLIENT_CLOSED"), guard: "", to: "CLOSED", output: closed(CC) },
  // STARTTLS
  { from: "STARTTLS", ctx: { ...REQ, optionCount: 1 }, event: E("TLS_READY"), guard: "", to: "AWAIT_OPTION", expect: { tlsActive: true, optionCount: 1 } },
  { from: "STARTTLS", ctx: REQ, event: E("TLS_FAILED", { message: "bad key" }), guard: "", to: "CLOSED", expect: { tlsActive: false }, actions: ["closeConnection"], output: closed("TLS handshake failed") },
  { from: "STARTTLS", ctx: REQ, event: E("CLIENT_CLOSED"), guard: "", to: "CLOSED", output: closed(CC) },
];

describe("optionsMachine", () => {
  actorTable(optionsMachine, base, optionRows);

  it("input: defaults (MAX_OPTIONS, no TLS) and overrides", () => {
    const a = createActor(optionsMachine, { input: {} }).start();
    expect(a.getSnapshot().context).toEqual({ ...base, maxOptions: MAX_OPTIONS });
    const b = createActor(optionsMachine, { input: { maxOptions: 3, tls: "require" } }).start();
    expect(b.getSnapshot().context).toMatchObject({ maxOptions: 3, tls: "require", tlsActive: false });
  });

  it("every option counts toward the budget, errors included", () => {
    const log: string[] = [];
    const a = createActor(spied(optionsMachine, log), { input: { maxOptions: 2 } }).start();
    a.send({ type: "NBD_OPT_UNKNOWN", option: 99 });
    a.send({ type: "OPTION_TOO_LARGE", option: 3 });
    expect(a.getSnapshot().context.optionCount).toBe(2);
    a.send({ type: "NBD_OPT_LIST", length: 0 });
    expect(a.getSnapshot().value).toBe("CLOSED");
    expect(log).toEqual([err("UNSUP"), err("TOO_BIG"), "closeConnection"]);
    expect(a.getSnapshot().output).toMatchObject(closed("too many options"));
  });

  it("TLS required: options refused until STARTTLS succeeds, then allowed", () => {
    const log: string[] = [];
    const a = createActor(spied(optionsMachine, log), { input: { tls: "require" } }).start();
    a.send({ type: "NBD_OPT_LIST", length: 0 });
    a.send({ type: "NBD_OPT_STARTTLS", length: 0 });
    a.send({ type: "TLS_READY" });
    a.send({ type: "NBD_OPT_STARTTLS", length: 0 });
    a.send({ type: "NBD_OPT_LIST", length: 0 });
    expect(log).toEqual([err("TLS_REQD"), "startTls", err("INVALID"), "listExports"]);
    expect(a.getSnapshot().value).toBe("LIST_EXPORTS");
  });

  it("a full negotiation: structured replies, meta context, INFO, then GO", () => {
    const log: string[] = [];
    const a = createActor(spied(optionsMachine, log), { input: {} }).start();
    for (const ev of [
      E("NBD_OPT_STRUCTURED_REPLY", { length: 0 }), E("NBD_OPT_SET_META_CONTEXT", META),
      E("NBD_OPT_INFO", { name: "a", infos: [] }), E("EXPORT_READY"), E("NBD_OPT_GO", GO), E("EXPORT_READY"),
    ]) a.send(ev as never);
    expect(log).toEqual(["replyAck", "replyMetaContexts(set)", "openExport", "replyInfo", "closeExport", "openExport", "replyInfo"]);
    const s = a.getSnapshot();
    expect(s.status).toBe("done");
    // A well-formed INFO is not counted against the option budget.
    expect(s.context.optionCount).toBe(3);
    expect(s.output).toEqual({ transmission: true, exportName: "disk", structuredReplies: true, reason: undefined });
  });

  it("a failed GO leaves the client haggling, and a later close is not transmission", () => {
    const a = actorAt(optionsMachine, "OPEN_EXPORT", { ...base, go: true, exportName: "x" }, []);
    a.send({ type: "EXPORT_FAILED", error: "NBD_REP_ERR_UNKNOWN", message: "x: no such export" });
    a.send({ type: "CLIENT_CLOSED" });
    expect(a.getSnapshot().output).toMatchObject(closed(CC));
  });

  it("error replies carry a message for the client", () => {
    const extra: Record<string, unknown[]> = {};
    const a = createActor(spied(optionsMachine, [], extra), { input: { tls: "require" } }).start();
    a.send({ type: "NBD_OPT_GO", name: "", infos: [] });
    const { params } = extra.replyError![0] as { params: { message: string } };
    expect(params.message).toMatch(/TLS is required/);
  });

  it("events a state does not name are ignored", () => {
    for (const [from, type] of [["AWAIT_OPTION", "EXPORT_READY"], ["AWAIT_OPTION", "TLS_READY"], ["OPEN_EXPORT", "NBD_OPT_LIST"], ["LIST_EXPORTS", "TIMEOUT"]]) {
      const log: string[] = [];
      const a = actorAt(optionsMachine, from!, base, log);
      a.send({ type: type!, length: 0 } as never);
      expect(a.getSnapshot().value).toBe(from);
      expect(a.getSnapshot().context).toEqual(base);
      expect(log).toEqual([]);
    }
  });
});

// ------------------------------------------------------------- transmission

describe("transmissionMachine", () => {
  const drain = ["stopReading", "checkDrained"];
  actorTable(transmissionMachine, undefined, [
    { from: "SERVING", event: E("NBD_CMD_DISC"), guard: "", to: "DRAINING", actions: drain },
    { from: "SERVING", event: E("SHUTDOWN"), guard: "", to: "DRAINING", actions: drain },
    { from: "SERVING", event: E("FATAL", { reason: "bad request magic" }), guard: "", to: "DRAINING", actions: drain },
    { from: "SERVING", event: E("CLIENT_CLOSED"), guard: "", to: "CLOSED", actions: ["closeConnection"] },
    { from: "DRAINING", event: E("REPLIES_DRAINED"), guard: "", to: "CLOSED", actions: ["closeConnection"] },
    { from: "DRAINING", event: E("CLIENT_CLOSED"), guard: "", to: "CLOSED", actions: ["closeConnection"] },
  ]);

  it("DRAINING ignores further phase events (a second DISC, SHUTDOWN, FATAL)", () => {
    const log: string[] = [];
    const a = actorAt(transmissionMachine, "DRAINING", undefined, log);
    for (const type of ["NBD_CMD_DISC", "SHUTDOWN", "FATAL"]) a.send({ type, reason: "x" } as never);
    expect(a.getSnapshot().value).toBe("DRAINING");
    expect(log).toEqual([]);
  });
});
