// NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT: which metadata
// contexts (base:allocation, and those layers add, such as
// qemu:dirty-bitmap:NAME) a client may read with NBD_CMD_BLOCK_STATUS.
//
// - "This option MUST NOT be requested unless structured replies or
//   extended headers have been negotiated first ... a server SHOULD send
//   NBD_REP_ERR_INVALID".
// - SET "replaces all previously-set metadata contexts (including when this
//   command fails)"; "If zero queries are sent, the server MUST select no
//   metadata contexts". LIST with zero queries lists them all; a query that
//   is a namespace or prefix ending in ':' ("base:", "qemu:dirty-bitmap:")
//   lists every context under it, for LIST only.

import { assign, fromPromise } from "xstate";
import { errorMessage } from "../backend/errors.js";
import { declaredAction, declaredActor } from "../machines/effects.js";
import { BASE_ALLOCATION, NBD_OPT_LIST_META_CONTEXT, NBD_OPT_SET_META_CONTEXT, NBD_REP_ACK, NBD_REP_META_CONTEXT } from "../protocol/constants.js";
import { isNbdString } from "../protocol/strings.js";
import { WireError } from "../protocol/wire-base.js";
import { decodeMetaContextRequest, encodeMetaContextReply, encodeMetaContextRequest } from "../protocol/wire-options.js";
import { err } from "./assemble.js";
import type { CurrentOption, IoOf, OptionRecord, OptionsContext } from "./record.js";

/** The contexts a query list selects from `available`, in the server's order. */
export function matchMetaContexts(available: readonly string[], queries: readonly string[], list: boolean): string[] {
  if (queries.length === 0) return list ? [...available] : [];
  return available.filter((name) =>
    queries.some((q) => q === name || (list && q.endsWith(":") && name.startsWith(q))),
  );
}

function decode(payload: Buffer): Omit<CurrentOption, "option" | "length"> {
  try {
    const r = decodeMetaContextRequest(payload);
    if (!isNbdString(r.exportName) || !r.queries.every(isNbdString)) {
      return { exportName: "", queries: [], malformed: "export name or query longer than 4096 bytes or containing NUL" };
    }
    return { exportName: r.exportName, queries: r.queries };
  } catch (e) {
    if (e instanceof WireError) return { exportName: "", queries: [], malformed: `malformed meta context option: ${e.message}` };
    throw e;
  }
}

/** Model-walk payloads: no query, base:allocation, a namespace, a malformed one. */
const examples: Buffer[] = [
  encodeMetaContextRequest("", []),
  encodeMetaContextRequest("", [BASE_ALLOCATION]),
  encodeMetaContextRequest("", ["base:"]),
  // One query announced, its length past the end.
  Buffer.from([0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 50]),
];

const isSet = (c: OptionsContext) => c.current?.option === NBD_OPT_SET_META_CONTEXT;

const state = {
  META_CONTEXTS: {
    invoke: {
      id: "metaContexts",
      src: "metaContexts",
      input: ({ context }: { context: OptionsContext }) => ({ exportName: context.current?.exportName ?? "" }),
      onDone: { target: "AWAIT_OPTION", actions: ["selectMetaContexts", "replyMetaContexts"] },
      onError: {
        target: "AWAIT_OPTION",
        actions: {
          type: "replyError" as const,
          params: ({ event }: { event: { error?: unknown } }) => ({ error: "NBD_REP_ERR_PLATFORM" as const, message: errorMessage(event.error) }),
        },
      },
    },
  },
};

const transitions = [
  // --no-mc: as a server that does not know meta contexts.
  { guard: "metaContextsRefused", actions: err("NBD_REP_ERR_UNSUP", "meta contexts are disabled on this server") },
  { guard: "structuredRepliesOff", actions: err("NBD_REP_ERR_INVALID", "meta contexts need structured replies") },
  { target: "META_CONTEXTS" },
];

const shared = {
  states: state,
  guards: {
    metaContextsRefused: ({ context }: { context: OptionsContext }) => context.noMetaContexts,
  },
  actions: {
    forgetMetaContexts: assign({ meta: null }),
    /** SET: the matched contexts become the selection, numbered from 1. */
    selectMetaContexts: assign<OptionsContext, { type: string }, undefined, { type: string }, never>({
      meta: ({ context, event }) => {
        if (!isSet(context)) return context.meta;
        const names = matchMetaContexts((event as { output?: string[] }).output ?? [], context.current?.queries ?? [], false);
        return { exportName: context.current?.exportName ?? "", contexts: names.map((name, i) => ({ id: i + 1, name })) };
      },
    }),
    /** Side effect: NBD_REP_META_CONTEXT for each match, then NBD_REP_ACK. */
    replyMetaContexts: declaredAction("replyMetaContexts"),
  },
  actors: {
    metaContexts: declaredActor<{ exportName: string }, string[]>("metaContexts"),
  },
  effects: (ioOf: IoOf) => ({
    actors: {
      metaContexts: fromPromise<string[], { exportName: string }>(({ input, system }) => ioOf({ system }).backend.metaContexts(input.exportName)),
    },
    actions: {
      replyMetaContexts: ({ context, event, system }: { context: OptionsContext; event: { output: string[] }; system: object }) => {
        const io = ioOf({ system });
        const opt = context.current!.option;
        const chosen = isSet(context)
          ? (context.meta?.contexts ?? [])
          // LIST: the ids mean nothing yet; numbered the way SET would.
          : matchMetaContexts(event.output, context.current?.queries ?? [], true).map((name, i) => ({ id: i + 1, name }));
        for (const c of chosen) io.reply(opt, NBD_REP_META_CONTEXT, encodeMetaContextReply(c.id, c.name));
        io.reply(opt, NBD_REP_ACK);
      },
    },
  }),
};

export const listMetaContextOption: OptionRecord = {
  option: NBD_OPT_LIST_META_CONTEXT,
  event: "NBD_OPT_LIST_META_CONTEXT",
  decode,
  examples,
  transitions,
  ...shared,
};

export const setMetaContextOption: OptionRecord = {
  option: NBD_OPT_SET_META_CONTEXT,
  event: "NBD_OPT_SET_META_CONTEXT",
  decode,
  examples,
  // SET "replaces all previously-set metadata contexts (including when this
  // command fails)": whatever the answer, the old selection is gone.
  onTake: ["forgetMetaContexts"],
  transitions,
  ...shared,
};
