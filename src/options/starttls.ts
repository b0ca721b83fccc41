// NBD_OPT_STARTTLS: after the ACK everything is TLS or the session ends.
// The ACK is written on entering STARTTLS, and the upgrade starts right
// after it: nothing the client sent before the upgrade is read as an option
// (the STARTTLS injection class of bug). Whatever was negotiated in clear
// text may have been injected by a man in the middle: it is forgotten once
// TLS is up (nbdkit's fix for CVE-2021-3716 does the same); the spec: "If
// the client requests NBD_OPT_STARTTLS after this option, it MUST
// renegotiate structured replies" (and extended headers, meta contexts).
import { assign, fromPromise } from "xstate";
import { declaredActor } from "../machines/effects.js";
import { NBD_OPT_STARTTLS } from "../protocol/constants.js";
import { err, reason } from "./assemble.js";
import type { OptionRecord, OptionsContext } from "./record.js";

export const starttlsOption: OptionRecord = {
  option: NBD_OPT_STARTTLS,
  event: "NBD_OPT_STARTTLS",
  beforeTls: "allow",
  decode: () => ({}),
  examples: [Buffer.alloc(0), Buffer.alloc(4, 0xaa)],
  transitions: [
    { guard: "nonEmptyPayload", actions: err("NBD_REP_ERR_INVALID", "STARTTLS takes no data") },
    { guard: "tlsUnavailable", actions: err("NBD_REP_ERR_POLICY", "TLS is not enabled on this server") },
    { guard: "tlsAlreadyActive", actions: err("NBD_REP_ERR_INVALID", "TLS is already active") },
    { target: "STARTTLS" },
  ],
  states: {
    STARTTLS: {
      entry: "replyAck",
      invoke: {
        id: "upgradeTls",
        src: "upgradeTls",
        onDone: { target: "AWAIT_OPTION", actions: "tlsUp" },
        onError: { target: "CLOSED", actions: [reason("TLS handshake failed")] },
      },
    },
  },
  guards: {
    tlsUnavailable: ({ context }: { context: OptionsContext }) => context.tls === "off",
    tlsAlreadyActive: ({ context }: { context: OptionsContext }) => context.tlsActive,
  },
  actions: {
    tlsUp: assign({ tlsActive: true, structuredReplies: false, extendedHeaders: false, meta: null }),
  },
  actors: {
    upgradeTls: declaredActor("upgradeTls"),
  },
  effects: (ioOf) => ({
    actors: {
      upgradeTls: fromPromise(async ({ system }) => {
        const io = ioOf({ system });
        // Without credentials (the CLI refuses --tls then) the upgrade cannot happen: close.
        if (!io.startTls) throw new Error("TLS is not configured");
        await io.startTls();
      }),
    },
  }),
};
