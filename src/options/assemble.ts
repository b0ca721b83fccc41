// Builds the options machine from option records (record.ts). Every
// option event first meets the rules that hold for all options, in one
// place, as nbdkit checks them before its switch:
//   1. the budget: past maxOptions (plus a few per export of the largest
//      listing sent) the connection is cut;
//   2. TLS required: before TLS, with --tls=require, every option but
//      STARTTLS and ABORT gets NBD_REP_ERR_TLS_REQD (EXPORT_NAME, which has
//      no error reply, closes);
//   3. a malformed payload gets NBD_REP_ERR_INVALID (or closes);
// then the record's own transitions. Timeouts and the client going away
// are machine events in every waiting state.

import { assign, raise, setup, type AnyStateMachine } from "xstate";
import { declaredAction, declaredActor } from "../machines/effects.js";
import { MAX_OPTIONS } from "../protocol/constants.js";
import type { CurrentOption, Effects, IoOf, OptionRecord, OptionsContext, OptionsInput, RepError } from "./record.js";

/** Options each listed export may cost on top of the budget (INFO, LIST/SET_META_CONTEXT for it). */
export const OPTIONS_PER_LISTED_EXPORT = 4;

export const err = (error: RepError, message: string) => ({ type: "replyError" as const, params: { error, message } });
export const reason = (r: string) => ({ type: "recordReason" as const, params: { reason: r } });
// The connection machine owns the socket: an options machine that ends in CLOSED is what closes it.
const closed = (why: string) => ({ target: "CLOSED" as const, actions: [reason(why)] });

/**
 * Every candidate of an option event first takes the option (it becomes
 * current, and is counted). One that answers and stays re-enters
 * AWAIT_OPTION, so the next option is read.
 */
function taking(ts: unknown[], onTake: readonly unknown[] = []): unknown[] {
  return ts.map((t) => {
    const o = t as { actions?: unknown; target?: unknown };
    const acts = o.actions === undefined ? [] : Array.isArray(o.actions) ? o.actions : [o.actions];
    const stay = o.target === undefined ? { target: "AWAIT_OPTION", reenter: true } : {};
    return { ...(t as object), ...stay, actions: ["takeOption", ...onTake, ...acts] };
  });
}

/** The option an event carries (guards run before takeOption makes it current). */
export const cur = (event: unknown): CurrentOption | undefined => (event as { current?: CurrentOption }).current;

/** Transitions every option meets before its record's own. */
function prelude(r: OptionRecord): unknown[] {
  const out: unknown[] = [
    { guard: "optionBudgetExhausted", ...closed("too many options") },
  ];
  const tls = r.beforeTls ?? "refuse";
  if (tls === "refuse") out.push({ guard: "tlsRequired", actions: err("NBD_REP_ERR_TLS_REQD", "TLS is required on this server") });
  if (tls === "close") out.push({ guard: "tlsRequired", ...closed(`${r.event} before TLS`) });
  if ((r.onMalformed ?? "invalid") === "invalid") {
    out.push({ guard: "malformed", actions: { type: "replyMalformed" } });
  } else out.push({ guard: "malformed", ...closed(`malformed ${r.event}`) });
  return out;
}

/** Default OPTION_TIMEOUT (ms); runners provide theirs with machine.provide({ delays }). */
export const OPTION_TIMEOUT_MS = 60_000;

/** Thrown by readOption when the client went away (EOF): no reply, no error line. */
export class ClientGone extends Error {
  constructor() {
    super("client closed the connection");
    this.name = "ClientGone";
  }
}

const common = {
  guards: {
    clientGone: ({ event }: { event: unknown }) => (event as { error?: unknown }).error instanceof ClientGone,
    optionBudgetExhausted: ({ context }: { context: OptionsContext }) =>
      context.optionCount + 1 > context.maxOptions + OPTIONS_PER_LISTED_EXPORT * context.listed,
    tlsRequired: ({ context }: { context: OptionsContext }) => context.tls === "require" && !context.tlsActive,
    malformed: ({ event }: { event: unknown }) => cur(event)?.malformed !== undefined,
    /** "The client MUST NOT send any additional data with the option". */
    nonEmptyPayload: ({ event }: { event: unknown }) => (cur(event)?.length ?? 0) !== 0,
    structuredRepliesOff: ({ context }: { context: OptionsContext }) => !context.structuredReplies,
    extendedHeadersOn: ({ context }: { context: OptionsContext }) => context.extendedHeaders,
    shuttingDown: ({ context }: { context: OptionsContext }) => context.shuttingDown,
  },
  actions: {
    /** Side effect: NBD_REP_ACK for the current option. */
    replyAck: declaredAction("replyAck"),
    /** Side effect: an NBD_REP_ERR_* reply with a message. */
    replyError: declaredAction<{ error: RepError; message: string }>("replyError"),
    /** Side effect: NBD_REP_ERR_INVALID naming what is wrong with the payload. */
    replyMalformed: declaredAction("replyMalformed"),
    recordReason: assign({ reason: (_: unknown, p: { reason: string }) => p.reason }),
    recordReadError: assign({
      reason: ({ event }: { event: unknown }) => {
        const e = (event as { error?: unknown }).error;
        return `bad option frame: ${e instanceof Error ? e.message : String(e)}`;
      },
    }),
    markShuttingDown: assign({ shuttingDown: true }),
    takeOption: assign({
      current: ({ event }: { event: unknown }) => cur(event) ?? null,
      optionCount: ({ context }: { context: OptionsContext }) => context.optionCount + 1,
    }),
  },
};

/** The options machine for these records. */
export function assembleOptionsMachine(records: readonly OptionRecord[]): AnyStateMachine {
  const on: Record<string, unknown> = {};
  const states: Record<string, unknown> = {};
  const guards: Record<string, unknown> = { ...common.guards };
  const actions: Record<string, unknown> = { ...common.actions };
  const actors: Record<string, unknown> = {
    /** Read the next option frame (after the replies to the last have left) and decode it. */
    readOption: declaredActor<void, { type: string; current: CurrentOption }>("readOption"),
  };
  const seen = new Set<number>();
  for (const r of records) {
    if (seen.has(r.option)) throw new Error(`two records for option ${r.option}`);
    seen.add(r.option);
    on[r.event] = taking([...prelude(r), ...r.transitions], r.onTake);
    Object.assign(states, r.states);
    Object.assign(guards, r.guards);
    Object.assign(actions, r.actions);
    Object.assign(actors, r.actors);
  }
  // Options nobody has a record for: "the server MUST reply with NBD_REP_ERR_UNSUP".
  on.NBD_OPT_UNKNOWN = taking([
    { guard: "optionBudgetExhausted", ...closed("too many options") },
    { guard: "tlsRequired", actions: err("NBD_REP_ERR_TLS_REQD", "TLS is required on this server") },
    { actions: err("NBD_REP_ERR_UNSUP", "option not supported") },
  ]);
  // Payloads over the limit were skipped unread.
  on.OPTION_TOO_LARGE = taking([
    { guard: "optionBudgetExhausted", ...closed("too many options") },
    { actions: err("NBD_REP_ERR_TOO_BIG", "option payload too large") },
  ]);
  on.SHUTDOWN = closed("the server is shutting down");
  // Every waiting state also ends when the client goes away; a shutdown
  // lets the option in progress finish, then closes.
  // Every waiting state also ends when the client goes away.
  for (const st of Object.values(states) as { on?: Record<string, unknown> }[]) {
    st.on = {
      CLIENT_CLOSED: { target: "CLOSED", actions: reason("client closed the connection") },
      SHUTDOWN: { actions: "markShuttingDown" },
      ...st.on,
    };
  }
  const m = setup({
    types: {} as { context: OptionsContext; input: OptionsInput; events: { type: string } & Partial<CurrentOption> },
    guards: guards as never,
    actions: actions as never,
    actors: actors as never,
    delays: { OPTION_TIMEOUT: OPTION_TIMEOUT_MS },
  }).createMachine({
    id: "options",
    description: "Option haggling: from the client flags until transmission or close.",
    context: ({ input }: { input?: OptionsInput }) => ({
      optionCount: 0,
      maxOptions: input?.maxOptions ?? MAX_OPTIONS,
      listed: 0,
      tls: input?.tls ?? "off",
      tlsActive: false,
      structuredReplies: false,
      extendedHeaders: false,
      noStructuredReplies: input?.noStructuredReplies ?? false,
      noMetaContexts: input?.noMetaContexts ?? false,
      current: null,
      meta: null,
      chosen: null,
      shuttingDown: false,
    }),
    initial: "AWAIT_OPTION",
    states: {
      AWAIT_OPTION: {
        always: { guard: "shuttingDown", ...closed("the server is shutting down") },
        // The next option frame, decoded by its record (or refused whole: bad magic, EOF).
        invoke: {
          id: "readOption",
          src: "readOption",
          onDone: { actions: raise((({ event }: { event: { output: { type: string } } }) => event.output) as never) },
          onError: [
            { guard: "clientGone", target: "CLOSED", actions: reason("client closed the connection") },
            { target: "CLOSED", actions: [{ type: "recordReadError" }] },
          ],
        },
        // "the server MAY ... disconnect" a client that stalls: idle between
        // options, or mid-option (a payload that never arrives).
        after: { OPTION_TIMEOUT: closed("option phase timed out") },
        on: on as never,
      },
      ...(states as Record<string, never>),
      TRANSMISSION: { type: "final" },
      CLOSED: { type: "final" },
    },
    output: ({ context }: { context: OptionsContext }) => {
      const chosen = context.chosen;
      const meta = context.meta;
      // Meta contexts apply only to the export they were set for (nbdkit too).
      const forChosen = chosen && meta && (meta.exportName === chosen.info.name || meta.exportName === chosen.asked);
      return {
        transmission: context.reason === undefined && chosen !== null,
        chosen,
        structuredReplies: context.structuredReplies,
        extendedHeaders: context.extendedHeaders,
        metaContexts: forChosen && context.structuredReplies ? meta!.contexts : [],
        reason: context.reason,
      };
    },
  } as never);
  return m as unknown as AnyStateMachine;
}

/** The event the runner sends for an option frame: the record's decoding, or NBD_OPT_UNKNOWN. */
export function optionEvent(records: readonly OptionRecord[], option: number, payload: Buffer): { type: string; current: CurrentOption } {
  const r = records.find((x) => x.option === option);
  if (!r) return { type: "NBD_OPT_UNKNOWN", current: { option, length: payload.length } };
  return { type: r.event, current: { option, length: payload.length, ...r.decode(payload) } };
}

/** The implementations of every record's effects, plus the common ones, for machine.provide(). */
export function optionEffects(records: readonly OptionRecord[], io: IoOf, names: Record<string, number>): Effects {
  type Args = { context: OptionsContext; system: object };
  const actions: Record<string, unknown> = {
    replyAck: ({ context, system }: Args) => io({ system }).reply(context.current!.option, 1 /* NBD_REP_ACK */),
    replyError: ({ context, system }: Args, p: { error: RepError; message: string }) =>
      io({ system }).reply(context.current?.option ?? 0, names[p.error]!, Buffer.from(p.message.slice(0, 1024))),
    replyMalformed: ({ context, system }: Args) =>
      io({ system }).reply(context.current!.option, names.NBD_REP_ERR_INVALID!, Buffer.from(String(context.current!.malformed).slice(0, 1024))),
  };
  const actors: Record<string, unknown> = {};
  for (const r of records) {
    const e = r.effects?.(io);
    Object.assign(actions, e?.actions);
    Object.assign(actors, e?.actors);
  }
  return { actions, actors };
}
