// NBD_OPT_LIST: "Return zero or more NBD_REP_SERVER replies, one for each
// export, followed by NBD_REP_ACK or an error". The listing comes from the
// top of the stack; one refused by policy (EPERM, e.g. exportname-list=error)
// is NBD_REP_ERR_POLICY, any other failure NBD_REP_ERR_PLATFORM, as nbdkit
// sends (not INVALID: the client's option was fine). Negotiation goes on.
import { assign, fromPromise } from "xstate";
import { errorMessage, toNbdErrno } from "../backend/errors.js";
import type { ExportEntry } from "../backend/types.js";
import { declaredAction, declaredActor } from "../machines/effects.js";
import { NBD_EPERM, NBD_OPT_LIST, NBD_REP_ACK, NBD_REP_SERVER } from "../protocol/constants.js";
import { encodeServerReply } from "../protocol/wire-options.js";
import { err } from "./assemble.js";
import type { OptionRecord, OptionsContext } from "./record.js";

const failed = (error: "NBD_REP_ERR_POLICY" | "NBD_REP_ERR_PLATFORM") => ({
  type: "replyError" as const,
  params: ({ event }: { event: { error?: unknown } }) => ({ error, message: errorMessage(event.error) }),
});

export const listOption: OptionRecord = {
  option: NBD_OPT_LIST,
  event: "NBD_OPT_LIST",
  decode: () => ({}),
  examples: [Buffer.alloc(0), Buffer.alloc(4, 0xaa)],
  transitions: [
    // "If a client sends data with NBD_OPT_LIST ... MUST reply with NBD_REP_ERR_INVALID".
    { guard: "nonEmptyPayload", actions: err("NBD_REP_ERR_INVALID", "NBD_OPT_LIST takes no data") },
    { target: "LIST_EXPORTS" },
  ],
  states: {
    LIST_EXPORTS: {
      invoke: {
        id: "listExports",
        src: "listExports",
        input: ({ context }: { context: OptionsContext }) => ({ tls: context.tlsActive }),
        onDone: { target: "AWAIT_OPTION", actions: ["replyExportList", "recordListed"] },
        onError: [
          { guard: "listRefusedByPolicy", target: "AWAIT_OPTION", actions: failed("NBD_REP_ERR_POLICY") },
          { target: "AWAIT_OPTION", actions: failed("NBD_REP_ERR_PLATFORM") },
        ],
      },
    },
  },
  guards: {
    listRefusedByPolicy: ({ event }: { event: { error?: unknown } }) => toNbdErrno(event.error) === NBD_EPERM,
  },
  actions: {
    /** Side effect: NBD_REP_SERVER for each export, then NBD_REP_ACK. */
    replyExportList: declaredAction("replyExportList"),
    recordListed: assign<OptionsContext, { type: string }, undefined, { type: string }, never>({
      listed: ({ context, event }) => Math.max(context.listed, (event as { output?: ExportEntry[] }).output?.length ?? 0),
    }),
  },
  actors: {
    listExports: declaredActor<{ tls: boolean }, ExportEntry[]>("listExports"),
  },
  effects: (ioOf) => ({
    actors: {
      listExports: fromPromise<ExportEntry[], { tls: boolean }>(({ input, system }) => {
        const io = ioOf({ system });
        return io.backend.listExports({ readonly: io.readonly, tls: input.tls });
      }),
    },
    actions: {
      replyExportList: ({ context, event, system }: { context: OptionsContext; event: { output: ExportEntry[] }; system: object }) => {
        const io = ioOf({ system });
        const opt = context.current!.option;
        for (const e of event.output) io.reply(opt, NBD_REP_SERVER, encodeServerReply(e.name, e.description ?? ""));
        io.reply(opt, NBD_REP_ACK);
      },
    },
  }),
};
