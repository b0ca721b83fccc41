// NBD_OPT_LIST_HIER (experimental, off unless --experimental-list-hier; the
// wire format is docs/list-hier.md): one level of the export tree under a
// path, as NBD_REP_SERVER replies for exports and NBD_REP_SERVER_DIR
// replies for directories, then NBD_REP_ACK. Errors as NBD_OPT_LIST's
// (POLICY, PLATFORM), plus NBD_REP_ERR_UNKNOWN for a path that names
// nothing. Negotiation goes on.
import { assign, fromPromise } from "xstate";
import { errorMessage, toNbdErrno } from "../backend/errors.js";
import type { ExportEntry } from "../backend/types.js";
import { declaredAction, declaredActor } from "../machines/effects.js";
import { NBD_EPERM, NBD_OPT_LIST_HIER, NBD_REP_ACK, NBD_REP_SERVER, NBD_REP_SERVER_DIR } from "../protocol/constants.js";
import { hierLevel, validHierPath } from "../protocol/hier.js";
import { decodeHierRequest, encodeHierRequest, encodeServerDirReply, encodeServerReply, NBD_DIR_FLAG_EXPORT } from "../protocol/wire-options.js";
import type { OptionRecord, OptionsContext } from "./record.js";

const failed = (error: "NBD_REP_ERR_POLICY" | "NBD_REP_ERR_PLATFORM") => ({
  type: "replyError" as const,
  params: ({ event }: { event: { error?: unknown } }) => ({ error, message: errorMessage(event.error) }),
});

const pathOf = (context: OptionsContext) => context.current?.path ?? "";
const levelOf = (context: OptionsContext, event: { output?: ExportEntry[] }) => hierLevel(event.output ?? [], pathOf(context));

export const listHierOption: OptionRecord = {
  option: NBD_OPT_LIST_HIER,
  event: "NBD_OPT_LIST_HIER",
  decode: (payload) => {
    let path: string;
    try {
      path = decodeHierRequest(payload);
    } catch (e) {
      return { malformed: (e as Error).message };
    }
    if (Buffer.byteLength(path) > 4096) return { malformed: "NBD_OPT_LIST_HIER: the path is over 4096 bytes" };
    if (!validHierPath(path)) return { path, malformed: "NBD_OPT_LIST_HIER: a path is empty or ends with ':'" };
    return { path };
  },
  // The top, a directory, a path that does not end in ':', a truncated payload.
  examples: [encodeHierRequest(""), encodeHierRequest("a.img:"), encodeHierRequest("a.img"), Buffer.from([0, 0])],
  transitions: [{ target: "LIST_HIER" }],
  states: {
    LIST_HIER: {
      invoke: {
        id: "listHier",
        src: "listHier",
        input: ({ context }: { context: OptionsContext }) => ({ tls: context.tlsActive }),
        onDone: [
          {
            guard: "hierPathUnknown",
            target: "AWAIT_OPTION",
            actions: {
              type: "replyError",
              params: ({ context }: { context: OptionsContext }) => ({ error: "NBD_REP_ERR_UNKNOWN", message: `no export is under '${pathOf(context).slice(0, 256)}'` }),
            },
          },
          { target: "AWAIT_OPTION", actions: ["replyHierLevel", "recordHierListed"] },
        ],
        onError: [
          { guard: "hierRefusedByPolicy", target: "AWAIT_OPTION", actions: failed("NBD_REP_ERR_POLICY") },
          { target: "AWAIT_OPTION", actions: failed("NBD_REP_ERR_PLATFORM") },
        ],
      },
    },
  },
  guards: {
    hierPathUnknown: ({ context, event }: { context: OptionsContext; event: { output?: ExportEntry[] } }) => levelOf(context, event) === null,
    hierRefusedByPolicy: ({ event }: { event: { error?: unknown } }) => toNbdErrno(event.error) === NBD_EPERM,
  },
  actions: {
    /** Side effect: one reply per node of the level, then NBD_REP_ACK. */
    replyHierLevel: declaredAction("replyHierLevel"),
    // Each node listed may cost the client an option or two more (as NBD_OPT_LIST's exports).
    recordHierListed: assign<OptionsContext, { type: string }, undefined, { type: string }, never>({
      listed: ({ context, event }) => Math.max(context.listed, levelOf(context, event as { output?: ExportEntry[] })?.length ?? 0),
    }),
  },
  actors: {
    listHier: declaredActor<{ tls: boolean }, ExportEntry[]>("listHier"),
  },
  effects: (ioOf) => ({
    actors: {
      // The level is cut from the stack's whole listing (docs/list-hier.md says why and what would be better).
      listHier: fromPromise<ExportEntry[], { tls: boolean }>(({ input, system }) => {
        const io = ioOf({ system });
        return io.backend.listExports({ readonly: io.readonly, tls: input.tls });
      }),
    },
    actions: {
      replyHierLevel: ({ context, event, system }: { context: OptionsContext; event: { output: ExportEntry[] }; system: object }) => {
        const io = ioOf({ system });
        const opt = context.current!.option;
        for (const n of levelOf(context, event) ?? []) {
          if (n.isDir) io.reply(opt, NBD_REP_SERVER_DIR, encodeServerDirReply(n.name, n.isExport ? NBD_DIR_FLAG_EXPORT : 0, n.description));
          else io.reply(opt, NBD_REP_SERVER, encodeServerReply(n.name, n.description));
        }
        io.reply(opt, NBD_REP_ACK);
      },
    },
  }),
};
