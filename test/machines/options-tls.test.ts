// The options machine's TLS rules as sequences (the per-transition table is
// in protocol-machines.test.ts): what --tls=off|on|require allow before and
// after STARTTLS, and that clear-text state is forgotten once TLS is up (a
// man in the middle could have injected it: CVE-2021-3716 in nbdkit). Each
// option arrives as readOption's outcome, each effect's result as the
// invoked actor's, through xstate's pure transition().
import { describe, expect, it } from "vitest";
import type { EventObject } from "xstate";
import { optionsMachine, type TlsMode } from "../../src/machines/options.js";
import { ClientGone } from "../../src/options/assemble.js";
import type { CurrentOption } from "../../src/options/record.js";
import * as C from "../../src/protocol/constants.js";
import { drive } from "./machine-table.js";

const err = (e: string) => `replyError(NBD_REP_ERR_${e})`;
const done = (id: string, output?: unknown) => ({ type: `xstate.done.actor.${id}`, output });
const fail = (id: string, error: unknown = new Error(`${id} failed`)) => ({ type: `xstate.error.actor.${id}`, error });
const option = (type: string, current: Partial<CurrentOption> & { option: number }) => done("readOption", { type, current: { length: 0, ...current } });

const STARTTLS = option("NBD_OPT_STARTTLS", { option: C.NBD_OPT_STARTTLS });
const TLS_UP = done("upgradeTls");
const LIST = option("NBD_OPT_LIST", { option: C.NBD_OPT_LIST });
const LISTED = done("listExports", [{ name: "" }]);
const SR = option("NBD_OPT_STRUCTURED_REPLY", { option: C.NBD_OPT_STRUCTURED_REPLY });
const EH = option("NBD_OPT_EXTENDED_HEADERS", { option: C.NBD_OPT_EXTENDED_HEADERS });
const SET = option("NBD_OPT_SET_META_CONTEXT", { option: C.NBD_OPT_SET_META_CONTEXT, exportName: "", queries: [C.BASE_ALLOCATION] });
const LIST_MC = option("NBD_OPT_LIST_META_CONTEXT", { option: C.NBD_OPT_LIST_META_CONTEXT, exportName: "", queries: [] });
const CONTEXTS = done("metaContexts", [C.BASE_ALLOCATION]);
const GO = option("NBD_OPT_GO", { option: C.NBD_OPT_GO, name: "", infos: [] });
const INFO = option("NBD_OPT_INFO", { option: C.NBD_OPT_INFO, name: "x", infos: [] });
const EXPORT_NAME = option("NBD_OPT_EXPORT_NAME", { option: C.NBD_OPT_EXPORT_NAME, name: "disk" });
const ABORT = option("NBD_OPT_ABORT", { option: C.NBD_OPT_ABORT });
const UNKNOWN = option("NBD_OPT_UNKNOWN", { option: 42 });
const INFO_OUT = { name: "", size: 512, flags: 1, description: null, blockSize: null, canWrite: true, canFua: false };
const OPENED = done("openExport", { info: INFO_OUT, opened: { tag: "ctx" }, asked: "" });

function run(tls: TlsMode, events: EventObject[], maxOptions?: number) {
  const { snapshot, decided } = drive(optionsMachine, { tls, maxOptions }, events);
  return {
    s: snapshot,
    effects: decided.flatMap((d) => d.effects),
    /** What each invoked effect was given, in order. */
    inputs: decided.flatMap((d) => d.invokes.filter((id) => id !== "readOption").map((id) => [id, d.inputs[id]] as const)),
  };
}

describe("options machine: TLS", () => {
  it("--tls=off: STARTTLS is NBD_REP_ERR_POLICY and the session goes on in clear", () => {
    const { s, effects, inputs } = run("off", [STARTTLS, LIST]);
    expect(effects).toEqual([err("POLICY")]);
    expect(s.value).toBe("LIST_EXPORTS");
    expect(inputs).toEqual([["listExports", { tls: false }]]);
    expect(s.context.tlsActive).toBe(false);
  });

  it("--tls=on: every option works before TLS; STARTTLS is acknowledged, then the TLS handshake runs", () => {
    const before = run("on", [LIST, LISTED, SR, STARTTLS]);
    expect(before.s.value).toBe("STARTTLS");
    expect(before.effects).toEqual(["replyExportList", "replyAck", "replyAck"]);
    expect(before.inputs).toEqual([["listExports", { tls: false }], ["upgradeTls", undefined]]);
    const { s } = run("on", [LIST, LISTED, SR, STARTTLS, TLS_UP]);
    expect(s.value).toBe("AWAIT_OPTION");
    expect(s.context).toMatchObject({ tlsActive: true, optionCount: 3, structuredReplies: false });
  });

  it("after TLS, the stack is asked with tls=true (listing and opening: filters such as tls-fallback tell)", () => {
    const { inputs } = run("require", [STARTTLS, TLS_UP, LIST, LISTED, GO]);
    expect(inputs).toEqual([
      ["upgradeTls", undefined],
      ["listExports", { tls: true }],
      ["openExport", { name: "", keep: true, tls: true, structuredReplies: false, extendedHeaders: false, metaFor: null }],
    ]);
  });

  it("structured replies and meta contexts negotiated in clear text are forgotten after STARTTLS", () => {
    const { s, effects } = run("on", [
      SR, SET, CONTEXTS, STARTTLS, TLS_UP,
      // Meta contexts now need structured replies negotiated again, inside TLS.
      SET, SR, SET, CONTEXTS, GO, OPENED,
    ]);
    expect(effects).toEqual([
      "replyAck", "replyMetaContexts", "replyAck",
      err("INVALID"), "replyAck", "replyMetaContexts", "replyInfo",
    ]);
    expect(s.output).toMatchObject({ transmission: true, structuredReplies: true, metaContexts: [{ id: 1, name: C.BASE_ALLOCATION }] });
  });

  it("a selection made in clear text does not survive STARTTLS even if nothing is set again", () => {
    const { s } = run("on", [SR, SET, CONTEXTS, STARTTLS, TLS_UP, SR, GO, OPENED]);
    expect(s.output).toMatchObject({ transmission: true, structuredReplies: true, metaContexts: [] });
  });

  it("extended headers negotiated in clear text are forgotten after STARTTLS, and can be negotiated again", () => {
    const up = run("on", [EH, STARTTLS, TLS_UP]);
    expect(up.s.context).toMatchObject({ tlsActive: true, extendedHeaders: false, structuredReplies: false });
    // EXPORT_NAME after extended headers would close; after TLS they are gone, so it opens.
    expect(run("on", [EH, STARTTLS, TLS_UP, EXPORT_NAME]).s.value).toBe("EXPORT_NAME");
    const again = run("on", [EH, STARTTLS, TLS_UP, EH, GO, OPENED]);
    expect(again.effects).toEqual(["replyAck", "replyAck", "replyAck", "replyInfo"]);
    expect(again.s.output).toMatchObject({ transmission: true, extendedHeaders: true, structuredReplies: true });
  });

  it("--tls=require: every option but STARTTLS and ABORT is refused until TLS is up", () => {
    const { s, effects } = run("require", [LIST, GO, INFO, SR, EH, LIST_MC, SET, UNKNOWN]);
    expect(effects).toEqual(Array(8).fill(err("TLS_REQD")));
    expect(s.context).toMatchObject({ tlsActive: false, structuredReplies: false, extendedHeaders: false, optionCount: 8 });
    expect(s.value).toBe("AWAIT_OPTION");
  });

  it("--tls=require: NBD_OPT_EXPORT_NAME before TLS closes (it has no error reply); after TLS it opens", () => {
    const before = run("require", [EXPORT_NAME]);
    expect(before.effects).toEqual([]);
    expect(before.s.output).toMatchObject({ transmission: false, reason: "NBD_OPT_EXPORT_NAME before TLS" });

    const after = run("require", [STARTTLS, TLS_UP, EXPORT_NAME, OPENED]);
    expect(after.effects).toEqual(["replyAck", "replyExportName"]);
    expect(after.inputs.at(-1)).toEqual(["openExport", { name: "disk", keep: true, tls: true, structuredReplies: false, extendedHeaders: false, metaFor: null }]);
    expect(after.s.output).toMatchObject({ transmission: true, chosen: { asked: "" } });
  });

  it("--tls=require: ABORT before TLS is acknowledged and closes", () => {
    const { s, effects } = run("require", [ABORT]);
    expect(effects).toEqual(["replyAck"]);
    expect(s.output).toMatchObject({ transmission: false, reason: "client sent NBD_OPT_ABORT" });
  });

  it("a failed handshake closes the session: there is no way back to clear text", () => {
    for (const tls of ["on", "require"] as const) {
      const { s, effects } = run(tls, [STARTTLS, fail("upgradeTls", new Error("bad key"))]);
      expect(effects).toEqual(["replyAck"]);
      expect(s.output).toMatchObject({ transmission: false, reason: "TLS handshake failed" });
    }
  });

  it("while the handshake runs no option is read (nothing is invoked to read one), and the client going away ends it", () => {
    const during = drive(optionsMachine, { tls: "on" }, [STARTTLS]);
    expect(Object.keys(during.snapshot.children)).toEqual(["upgradeTls"]);
    // Nor is the option timeout running: a TLS handshake is not an idle client.
    expect(during.decided.at(-1)!.timers).toEqual([]);
    const { s, effects } = run("on", [STARTTLS, GO]);
    expect(s.value).toBe("STARTTLS");
    expect(effects).toEqual(["replyAck"]);
    expect(run("on", [STARTTLS, { type: "CLIENT_CLOSED" }]).s.output).toMatchObject({ transmission: false, reason: "client closed the connection" });
  });

  it("a second STARTTLS inside TLS is NBD_REP_ERR_INVALID and TLS stays up", () => {
    const { s, effects } = run("require", [STARTTLS, TLS_UP, STARTTLS]);
    expect(effects).toEqual(["replyAck", err("INVALID")]);
    expect(s.context.tlsActive).toBe(true);
    expect(s.value).toBe("AWAIT_OPTION");
  });

  it("STARTTLS counts toward the option budget, refused ones too", () => {
    const { s, effects } = run("on", [LIST, LISTED, STARTTLS], 1);
    // One export listed allows 4 more: not exhausted yet.
    expect(effects).toEqual(["replyExportList", "replyAck"]);
    expect(s.value).toBe("STARTTLS");
    const cut = run("require", [LIST, UNKNOWN, STARTTLS], 2);
    expect(cut.effects).toEqual([err("TLS_REQD"), err("TLS_REQD")]);
    expect(cut.s.output).toMatchObject({ reason: "too many options" });
  });

  it("the client going away before TLS is up is no TLS failure", () => {
    const { s } = run("require", [fail("readOption", new ClientGone())]);
    expect(s.output).toMatchObject({ transmission: false, reason: "client closed the connection" });
  });
});
