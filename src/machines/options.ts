// Option haggling (doc/proto.md, "Option haggling"): one event per option
// the client sends, named as the spec names the option. Framing and
// decoding are the connection's; the rules about which option is allowed
// when, and what reply it gets, are here.
//
// Rules carried by guards:
// - optionBudgetExhausted: a client may send at most maxOptions options
//   (bounds the work one connection can cause before transmission).
// - nonEmptyPayload: NBD_OPT_LIST and NBD_OPT_STRUCTURED_REPLY carry no
//   data; "If a client sends data ... the server MUST reply with
//   NBD_REP_ERR_INVALID".
// - structuredRepliesOff: meta contexts need structured replies ("the
//   server MUST ... reply with NBD_REP_ERR_INVALID" otherwise, per
//   NBD_OPT_SET_META_CONTEXT).
// - tlsRequired: with --tls=require every option but STARTTLS and ABORT
//   gets NBD_REP_ERR_TLS_REQD until TLS is up (EXPORT_NAME, which cannot
//   get an error reply, closes the connection).
// - EXPORT_NAME on an unknown export: "the server MUST terminate the
//   session" (there is no error reply for it).
// - STARTTLS: after the ACK everything is TLS (TLS_READY) or the session
//   ends (TLS_FAILED); state negotiated in clear text before it (structured
//   replies; the runner drops meta contexts) is forgotten on TLS_READY.

import { assign, setup } from "xstate";
import { MAX_OPTIONS } from "../protocol/constants.js";

/** Option errors by their spec name (src/protocol/constants.ts has the numbers). */
export type RepError =
  | "NBD_REP_ERR_UNSUP" | "NBD_REP_ERR_POLICY" | "NBD_REP_ERR_INVALID" | "NBD_REP_ERR_PLATFORM" | "NBD_REP_ERR_TLS_REQD"
  | "NBD_REP_ERR_UNKNOWN" | "NBD_REP_ERR_SHUTDOWN" | "NBD_REP_ERR_BLOCK_SIZE_REQD" | "NBD_REP_ERR_TOO_BIG";

export type TlsMode = "off" | "on" | "require";

export interface OptionsInput {
  maxOptions?: number;
  tls?: TlsMode;
}

export interface OptionsContext {
  optionCount: number;
  maxOptions: number;
  tls: TlsMode;
  tlsActive: boolean;
  structuredReplies: boolean;
  /** NBD_OPT_GO (true) or NBD_OPT_INFO (false) while OPEN_EXPORT. */
  go: boolean;
  exportName: string;
  reason?: string;
}

type Malformed = { malformed?: boolean };

export type OptionsEvent =
  | { type: "NBD_OPT_EXPORT_NAME"; name: string }
  | { type: "NBD_OPT_ABORT" }
  | { type: "NBD_OPT_LIST"; length: number }
  | { type: "NBD_OPT_STARTTLS"; length: number }
  | ({ type: "NBD_OPT_INFO" | "NBD_OPT_GO"; name: string; infos: number[] } & Malformed)
  | { type: "NBD_OPT_STRUCTURED_REPLY"; length: number }
  | ({ type: "NBD_OPT_LIST_META_CONTEXT" | "NBD_OPT_SET_META_CONTEXT"; exportName: string; queries: string[] } & Malformed)
  | { type: "NBD_OPT_UNKNOWN"; option: number }
  | { type: "OPTION_TOO_LARGE"; option: number }
  | { type: "EXPORTS_LISTED" }
  | { type: "LIST_FAILED"; error: RepError; message: string }
  | { type: "EXPORT_READY" }
  | { type: "EXPORT_FAILED"; error: RepError; message: string }
  | { type: "TLS_READY" }
  | { type: "TLS_FAILED"; message: string }
  | { type: "TIMEOUT" }
  | { type: "CLIENT_CLOSED" };

export interface OptionsOutput {
  transmission: boolean;
  exportName: string;
  structuredReplies: boolean;
  reason?: string;
}

type ErrParams = { error: RepError; message: string };

const err = (error: RepError, message: string) => ({ type: "replyError" as const, params: { error, message } });
const reason = (r: string) => ({ type: "recordReason" as const, params: { reason: r } });

const overBudget = {
  guard: "optionBudgetExhausted" as const,
  target: "CLOSED" as const,
  actions: [reason("too many options"), "closeConnection" as const],
};
const tlsRequired = {
  guard: "tlsRequired" as const,
  actions: ["countOption" as const, err("NBD_REP_ERR_TLS_REQD", "TLS is required on this server")],
};
const openExport = [
  overBudget,
  tlsRequired,
  { guard: "malformed" as const, actions: ["countOption" as const, err("NBD_REP_ERR_INVALID", "malformed NBD_OPT_INFO/GO")] },
  { target: "OPEN_EXPORT" as const, actions: ["countOption" as const, "recordOption" as const] },
];
// A well-formed NBD_OPT_INFO is not counted: `nbdinfo --list` asks one per
// listed export (up to 10000), and each costs no more than a new connection.
const openInfo = [
  overBudget,
  tlsRequired,
  { guard: "malformed" as const, actions: ["countOption" as const, err("NBD_REP_ERR_INVALID", "malformed NBD_OPT_INFO/GO")] },
  { target: "OPEN_EXPORT" as const, actions: "recordOption" as const },
];
const metaContext = (set: boolean) => [
  overBudget,
  tlsRequired,
  {
    guard: "structuredRepliesOff" as const,
    actions: ["countOption" as const, err("NBD_REP_ERR_INVALID", "meta contexts need structured replies")],
  },
  { guard: "malformed" as const, actions: ["countOption" as const, err("NBD_REP_ERR_INVALID", "malformed meta context option")] },
  { actions: ["countOption" as const, { type: "replyMetaContexts" as const, params: { set } }] },
];

export const optionsMachine = setup({
  types: {
    context: {} as OptionsContext,
    events: {} as OptionsEvent,
    input: {} as OptionsInput,
    output: {} as OptionsOutput,
  },
  actions: {
    /** Side effect: NBD_REP_ACK for the current option. */
    replyAck: () => {},
    /** Side effect: an NBD_REP_ERR_* reply with a message. */
    replyError: (_, _p: ErrParams) => {},
    /** Side effect: list exports through the stack, send NBD_REP_SERVER each + ACK, then report. */
    listExports: () => {},
    /** Side effect: open the export through the stack, then report EXPORT_READY/EXPORT_FAILED. */
    openExport: () => {},
    /** Side effect: NBD_REP_INFO replies (EXPORT always; NAME, DESCRIPTION, BLOCK_SIZE on request) + ACK. */
    replyInfo: () => {},
    /** Side effect: close the context opened for NBD_OPT_INFO. */
    closeExport: () => {},
    /** Side effect: the NBD_OPT_EXPORT_NAME reply (size, flags, zeroes unless NO_ZEROES). */
    replyExportName: () => {},
    /** Side effect: NBD_REP_META_CONTEXT for each match + ACK; SET also records them. */
    replyMetaContexts: (_, _p: { set: boolean }) => {},
    /** Side effect: ACK, then wrap the socket in TLS and report TLS_READY/TLS_FAILED. */
    startTls: () => {},
    /** Side effect: close the socket. */
    closeConnection: () => {},
    countOption: assign({ optionCount: ({ context }) => context.optionCount + 1 }),
    recordOption: assign({
      go: ({ event }) => event.type === "NBD_OPT_GO" || event.type === "NBD_OPT_EXPORT_NAME",
      exportName: ({ context, event }) => ("name" in event ? event.name : context.exportName),
    }),
    enableStructuredReplies: assign({ structuredReplies: true }),
    // Whatever was negotiated in clear text may have been injected by a man
    // in the middle: forget it once TLS is up (nbdkit's fix for
    // CVE-2021-3716 does the same).
    tlsUp: assign({ tlsActive: true, structuredReplies: false }),
    recordReason: assign({ reason: (_, p: { reason: string }) => p.reason }),
  },
  guards: {
    optionBudgetExhausted: ({ context }) => context.optionCount >= context.maxOptions,
    nonEmptyPayload: ({ event }) => "length" in event && event.length !== 0,
    malformed: ({ event }) => "malformed" in event && event.malformed === true,
    structuredRepliesOff: ({ context }) => !context.structuredReplies,
    tlsRequired: ({ context }) => context.tls === "require" && !context.tlsActive,
    tlsUnavailable: ({ context }) => context.tls === "off",
    tlsAlreadyActive: ({ context }) => context.tlsActive,
    isGo: ({ context }) => context.go,
  },
}).createMachine({
  id: "options",
  description: "Option haggling: from the client flags until transmission or close.",
  context: ({ input }) => ({
    optionCount: 0,
    maxOptions: input?.maxOptions ?? MAX_OPTIONS,
    tls: input?.tls ?? "off",
    tlsActive: false,
    structuredReplies: false,
    go: false,
    exportName: "",
  }),
  initial: "AWAIT_OPTION",
  states: {
    AWAIT_OPTION: {
      on: {
        NBD_OPT_ABORT: [
          overBudget,
          // "the server SHOULD ... reply with NBD_REP_ACK" and close.
          { target: "CLOSED", actions: ["countOption", "replyAck", reason("client sent NBD_OPT_ABORT"), "closeConnection"] },
        ],
        NBD_OPT_STARTTLS: [
          overBudget,
          { guard: "nonEmptyPayload", actions: ["countOption", err("NBD_REP_ERR_INVALID", "STARTTLS takes no data")] },
          { guard: "tlsUnavailable", actions: ["countOption", err("NBD_REP_ERR_POLICY", "TLS is not enabled on this server")] },
          { guard: "tlsAlreadyActive", actions: ["countOption", err("NBD_REP_ERR_INVALID", "TLS is already active")] },
          { target: "STARTTLS", actions: "countOption" },
        ],
        NBD_OPT_EXPORT_NAME: [
          overBudget,
          { guard: "tlsRequired", target: "CLOSED", actions: [reason("NBD_OPT_EXPORT_NAME before TLS"), "closeConnection"] },
          { target: "EXPORT_NAME", actions: ["countOption", "recordOption"] },
        ],
        NBD_OPT_LIST: [
          overBudget,
          tlsRequired,
          { guard: "nonEmptyPayload", actions: ["countOption", err("NBD_REP_ERR_INVALID", "NBD_OPT_LIST takes no data")] },
          { target: "LIST_EXPORTS", actions: "countOption" },
        ],
        NBD_OPT_INFO: openInfo,
        NBD_OPT_GO: openExport,
        NBD_OPT_STRUCTURED_REPLY: [
          overBudget,
          tlsRequired,
          { guard: "nonEmptyPayload", actions: ["countOption", err("NBD_REP_ERR_INVALID", "NBD_OPT_STRUCTURED_REPLY takes no data")] },
          { actions: ["countOption", "enableStructuredReplies", "replyAck"] },
        ],
        NBD_OPT_LIST_META_CONTEXT: metaContext(false),
        NBD_OPT_SET_META_CONTEXT: metaContext(true),
        NBD_OPT_UNKNOWN: [overBudget, tlsRequired, { actions: ["countOption", err("NBD_REP_ERR_UNSUP", "option not supported")] }],
        OPTION_TOO_LARGE: [overBudget, { actions: ["countOption", err("NBD_REP_ERR_TOO_BIG", "option payload too large")] }],
        TIMEOUT: { target: "CLOSED", actions: [reason("option phase timed out"), "closeConnection"] },
        CLIENT_CLOSED: { target: "CLOSED", actions: reason("client closed the connection") },
      },
    },
    LIST_EXPORTS: {
      entry: "listExports",
      on: {
        EXPORTS_LISTED: "AWAIT_OPTION",
        LIST_FAILED: { target: "AWAIT_OPTION", actions: { type: "replyError", params: ({ event }) => ({ error: event.error, message: event.message }) } },
        CLIENT_CLOSED: { target: "CLOSED", actions: reason("client closed the connection") },
      },
    },
    OPEN_EXPORT: {
      entry: "openExport",
      on: {
        EXPORT_READY: [
          { guard: "isGo", target: "TRANSMISSION", actions: "replyInfo" },
          { target: "AWAIT_OPTION", actions: ["replyInfo", "closeExport"] },
        ],
        EXPORT_FAILED: { target: "AWAIT_OPTION", actions: { type: "replyError", params: ({ event }) => ({ error: event.error, message: event.message }) } },
        CLIENT_CLOSED: { target: "CLOSED", actions: reason("client closed the connection") },
      },
    },
    EXPORT_NAME: {
      entry: "openExport",
      on: {
        EXPORT_READY: { target: "TRANSMISSION", actions: "replyExportName" },
        EXPORT_FAILED: { target: "CLOSED", actions: [reason("unknown export"), "closeConnection"] },
        CLIENT_CLOSED: { target: "CLOSED", actions: reason("client closed the connection") },
      },
    },
    STARTTLS: {
      entry: "startTls",
      on: {
        TLS_READY: { target: "AWAIT_OPTION", actions: "tlsUp" },
        TLS_FAILED: { target: "CLOSED", actions: [reason("TLS handshake failed"), "closeConnection"] },
        CLIENT_CLOSED: { target: "CLOSED", actions: reason("client closed the connection") },
      },
    },
    TRANSMISSION: { type: "final" },
    CLOSED: { type: "final" },
  },
  output: ({ context }) => ({
    transmission: context.reason === undefined && context.go,
    exportName: context.exportName,
    structuredReplies: context.structuredReplies,
    reason: context.reason,
  }),
});

