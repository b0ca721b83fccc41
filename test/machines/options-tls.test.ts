// The options machine's TLS edges as sequences (the per-transition table is
// in protocol-machines.test.ts): what --tls=off|on|require allow before and
// after STARTTLS, and that clear-text state is forgotten once TLS is up
// (a man in the middle could have injected it: CVE-2021-3716 in nbdkit).
import { describe, expect, it } from "vitest";
import { createActor } from "xstate";
import { optionsMachine, type OptionsEvent, type TlsMode } from "../../src/machines/options.js";
import { spied } from "./actor-table.js";

const err = (e: string) => `replyError(NBD_REP_ERR_${e})`;
const META = { exportName: "", queries: ["base:allocation"] };

function start(tls: TlsMode, maxOptions?: number) {
  const log: string[] = [];
  const a = createActor(spied(optionsMachine, log), { input: { tls, maxOptions } }).start();
  const send = (...evs: OptionsEvent[]) => {
    for (const ev of evs) a.send(ev);
  };
  return { a, log, send };
}

describe("options machine: TLS", () => {
  it("--tls=off: STARTTLS is NBD_REP_ERR_POLICY and the session goes on in clear", () => {
    const { a, log, send } = start("off");
    send({ type: "NBD_OPT_STARTTLS", length: 0 }, { type: "NBD_OPT_LIST", length: 0 });
    expect(log).toEqual([err("POLICY"), "listExports"]);
    expect(a.getSnapshot().context.tlsActive).toBe(false);
  });

  it("--tls=on: every option works before TLS, and STARTTLS upgrades", () => {
    const { a, log, send } = start("on");
    send({ type: "NBD_OPT_LIST", length: 0 }, { type: "EXPORTS_LISTED" }, { type: "NBD_OPT_STRUCTURED_REPLY", length: 0 });
    send({ type: "NBD_OPT_STARTTLS", length: 0 });
    expect(a.getSnapshot().value).toBe("STARTTLS");
    send({ type: "TLS_READY" });
    expect(log).toEqual(["listExports", "replyAck", "startTls"]);
    expect(a.getSnapshot().value).toBe("AWAIT_OPTION");
    expect(a.getSnapshot().context).toMatchObject({ tlsActive: true, optionCount: 3, structuredReplies: false });
  });

  it("structured replies negotiated in clear text are forgotten after STARTTLS", () => {
    const { a, log, send } = start("on");
    send({ type: "NBD_OPT_STRUCTURED_REPLY", length: 0 }, { type: "NBD_OPT_SET_META_CONTEXT", ...META });
    expect(a.getSnapshot().context.structuredReplies).toBe(true);
    send({ type: "NBD_OPT_STARTTLS", length: 0 }, { type: "TLS_READY" });
    expect(a.getSnapshot().context.structuredReplies).toBe(false);
    // Meta contexts now need structured replies negotiated again, inside TLS.
    send({ type: "NBD_OPT_SET_META_CONTEXT", ...META });
    send({ type: "NBD_OPT_STRUCTURED_REPLY", length: 0 }, { type: "NBD_OPT_SET_META_CONTEXT", ...META });
    expect(log).toEqual([
      "replyAck", "replyMetaContexts(set)", "startTls",
      err("INVALID"), "replyAck", "replyMetaContexts(set)",
    ]);
    send({ type: "NBD_OPT_GO", name: "", infos: [] }, { type: "EXPORT_READY" });
    expect(a.getSnapshot().output).toMatchObject({ transmission: true, structuredReplies: true });
  });

  it("--tls=require: every option but STARTTLS and ABORT is refused until TLS is up", () => {
    const { a, log, send } = start("require");
    send(
      { type: "NBD_OPT_LIST", length: 0 },
      { type: "NBD_OPT_GO", name: "", infos: [] },
      { type: "NBD_OPT_INFO", name: "x", infos: [] },
      { type: "NBD_OPT_STRUCTURED_REPLY", length: 0 },
      { type: "NBD_OPT_LIST_META_CONTEXT", ...META },
      { type: "NBD_OPT_UNKNOWN", option: 42 },
    );
    expect(log).toEqual(Array(6).fill(err("TLS_REQD")));
    expect(a.getSnapshot().context).toMatchObject({ tlsActive: false, structuredReplies: false, optionCount: 6 });
    expect(a.getSnapshot().value).toBe("AWAIT_OPTION");
  });

  it("--tls=require: NBD_OPT_EXPORT_NAME before TLS closes (it has no error reply); after TLS it opens", () => {
    const before = start("require");
    before.send({ type: "NBD_OPT_EXPORT_NAME", name: "disk" });
    expect(before.log).toEqual(["closeConnection"]);
    expect(before.a.getSnapshot().output).toMatchObject({ transmission: false, reason: "NBD_OPT_EXPORT_NAME before TLS" });

    const after = start("require");
    after.send({ type: "NBD_OPT_STARTTLS", length: 0 }, { type: "TLS_READY" }, { type: "NBD_OPT_EXPORT_NAME", name: "disk" });
    expect(after.log).toEqual(["startTls", "openExport"]);
    after.send({ type: "EXPORT_READY" });
    expect(after.a.getSnapshot().output).toMatchObject({ transmission: true, exportName: "disk" });
  });

  it("--tls=require: ABORT before TLS is acknowledged and closes", () => {
    const { a, log, send } = start("require");
    send({ type: "NBD_OPT_ABORT" });
    expect(log).toEqual(["replyAck", "closeConnection"]);
    expect(a.getSnapshot().output).toMatchObject({ transmission: false, reason: "client sent NBD_OPT_ABORT" });
  });

  it("a failed handshake closes the session: there is no way back to clear text", () => {
    for (const tls of ["on", "require"] as const) {
      const { a, log, send } = start(tls);
      send({ type: "NBD_OPT_STARTTLS", length: 0 }, { type: "TLS_FAILED", message: "bad key" });
      expect(log).toEqual(["startTls", "closeConnection"]);
      expect(a.getSnapshot().output).toMatchObject({ transmission: false, reason: "TLS handshake failed" });
    }
  });

  it("while the handshake runs, options are not taken (the runner reads none) and a close ends it", () => {
    const { a, log, send } = start("on");
    send({ type: "NBD_OPT_STARTTLS", length: 0 }, { type: "NBD_OPT_GO", name: "", infos: [] });
    expect(a.getSnapshot().value).toBe("STARTTLS");
    expect(log).toEqual(["startTls"]);
    send({ type: "CLIENT_CLOSED" });
    expect(a.getSnapshot().output).toMatchObject({ transmission: false, reason: "client closed the connection" });
  });

  it("a second STARTTLS inside TLS is NBD_REP_ERR_INVALID and TLS stays up", () => {
    const { a, log, send } = start("require");
    send({ type: "NBD_OPT_STARTTLS", length: 0 }, { type: "TLS_READY" }, { type: "NBD_OPT_STARTTLS", length: 0 });
    expect(log).toEqual(["startTls", err("INVALID")]);
    expect(a.getSnapshot().context.tlsActive).toBe(true);
  });

  it("STARTTLS counts toward the option budget", () => {
    const { a, log, send } = start("on", 1);
    send({ type: "NBD_OPT_LIST", length: 0 }, { type: "EXPORTS_LISTED" }, { type: "NBD_OPT_STARTTLS", length: 0 });
    expect(log).toEqual(["listExports", "closeConnection"]);
    expect(a.getSnapshot().output).toMatchObject({ reason: "too many options" });
  });
});
