// Opening an export for NBD_OPT_INFO, NBD_OPT_GO and NBD_OPT_EXPORT_NAME:
// the states, the invoked open (default export, the stack's open and
// prepare, the capabilities as transmission flags) and the replies.
//
// An export that cannot be opened (unknown, refused by a filter, a hostile
// name) gets NBD_REP_ERR_UNKNOWN to INFO/GO and the client may go on; for
// EXPORT_NAME "the server MUST terminate the session". For INFO the context
// is closed again before the reply (nothing is held across options).

import { assign, fromPromise } from "xstate";
import type { Opened } from "../backend/chain.js";
import { errorMessage } from "../backend/errors.js";
import { declaredAction, declaredActor } from "../machines/effects.js";
import * as C from "../protocol/constants.js";
import { WireError } from "../protocol/wire-base.js";
import { decodeInfoRequest, encodeExportNameReply, encodeInfoReply, encodeInfoRequest } from "../protocol/wire-options.js";
import { isNbdString } from "../protocol/strings.js";
import { reason } from "./assemble.js";
import { transmissionFlags, type ExportInfo } from "./export-info.js";
import type { CurrentOption, IoOf, OptionsContext } from "./record.js";

export interface OpenInput {
  name: string;
  /** GO or EXPORT_NAME: keep the context for transmission. */
  keep: boolean;
  tls: boolean;
  structuredReplies: boolean;
  extendedHeaders: boolean;
  /** Meta contexts are set for this name (BLOCK_STATUS_PAYLOAD may be offered). */
  metaFor: string | null;
}
export interface OpenOutput {
  info: ExportInfo;
  opened: Opened | null;
  asked: string;
}

/** INFO/GO payload: export name, then the NBD_INFO_* requested. */
export function decodeInfoGo(payload: Buffer): Omit<CurrentOption, "option" | "length"> {
  try {
    const r = decodeInfoRequest(payload);
    if (!isNbdString(r.name)) return { malformed: "export name longer than 4096 bytes or containing NUL", name: "", infos: [] };
    return { name: r.name, infos: r.requests };
  } catch (e) {
    if (e instanceof WireError) return { malformed: `malformed NBD_OPT_INFO/GO: ${e.message}`, name: "", infos: [] };
    throw e;
  }
}

/** Model-walk payloads: the default export, one with every info asked, a missing one, a malformed one. */
export const infoGoExamples: Buffer[] = [
  encodeInfoRequest("", []),
  encodeInfoRequest("", [C.NBD_INFO_NAME, C.NBD_INFO_DESCRIPTION, C.NBD_INFO_BLOCK_SIZE]),
  encodeInfoRequest("missing", []),
  // The name's length runs past the end of the payload.
  Buffer.from([0, 0, 0, 9, 0x61, 0, 0]),
];

const openInput = (keep: boolean) => ({ context }: { context: OptionsContext }): OpenInput => ({
  name: context.current?.name ?? "",
  keep,
  tls: context.tlsActive,
  structuredReplies: context.structuredReplies,
  extendedHeaders: context.extendedHeaders,
  metaFor: context.meta?.exportName ?? null,
});

const unknownExport = {
  type: "replyError" as const,
  params: ({ context, event }: { context: OptionsContext; event: { error?: unknown } }) => ({
    error: "NBD_REP_ERR_UNKNOWN" as const,
    message: `${(context.current?.name ?? "").slice(0, 256)}: ${errorMessage(event.error)}`,
  }),
};

const choose = assign({
  chosen: ({ event }: { event: { output?: OpenOutput } }) =>
    event.output?.opened ? { opened: event.output.opened, info: event.output.info, asked: event.output.asked } : null,
});

/** The states INFO, GO and EXPORT_NAME share. */
export const openExportStates = {
  OPEN_EXPORT_INFO: {
    invoke: {
      id: "openExport",
      src: "openExport",
      input: openInput(false),
      onDone: { target: "AWAIT_OPTION", actions: "replyInfo" },
      onError: { target: "AWAIT_OPTION", actions: unknownExport },
    },
  },
  OPEN_EXPORT_GO: {
    invoke: {
      id: "openExport",
      src: "openExport",
      input: openInput(true),
      onDone: { target: "TRANSMISSION", actions: [choose, "replyInfo"] },
      onError: { target: "AWAIT_OPTION", actions: unknownExport },
    },
  },
  EXPORT_NAME: {
    invoke: {
      id: "openExport",
      src: "openExport",
      input: openInput(true),
      onDone: { target: "TRANSMISSION", actions: [choose, "replyExportName"] },
      onError: { target: "CLOSED", actions: [reason("unknown export")] },
    },
  },
};

export const openExportDeclarations = {
  actions: {
    /** Side effect: NBD_REP_INFO replies (EXPORT always; NAME, DESCRIPTION, BLOCK_SIZE on request) + ACK. */
    replyInfo: declaredAction("replyInfo"),
    /** Side effect: the NBD_OPT_EXPORT_NAME reply (size, flags, zeroes unless NO_ZEROES). */
    replyExportName: declaredAction("replyExportName"),
  },
  actors: {
    /** Open the export through the stack and learn its info (INFO closes it again). */
    openExport: declaredActor<OpenInput, OpenOutput>("openExport"),
  },
};

/** The flags a client is told, given what it negotiated. */
function negotiatedFlags(info: ExportInfo, i: OpenInput): number {
  let flags = info.flags;
  // "NBD_FLAG_SEND_DF ... only if structured replies have been negotiated".
  if (i.structuredReplies) flags |= C.NBD_FLAG_SEND_DF;
  // "MUST NOT advertise this bit unless the client successfully negotiates
  // extended headers ..., and SHOULD NOT ... if the client does not
  // negotiate metacontexts".
  if (i.extendedHeaders && i.metaFor !== null) flags |= C.NBD_FLAG_BLOCK_STATUS_PAYLOAD;
  return flags;
}

export function openExportEffects(ioOf: IoOf) {
  return {
    actors: {
      openExport: fromPromise<OpenOutput, OpenInput>(async ({ input, signal, system }) => {
        const io = ioOf({ system });
        let name = input.name;
        if (name === "") {
          const d = await io.backend.defaultExport({ readonly: io.readonly, tls: input.tls });
          if (d === null) throw new Error("this server has no default export");
          name = d;
        }
        const opened = await io.backend.open(io.readonly, name, input.tls);
        let info: ExportInfo;
        try {
          info = await transmissionFlags(opened.ctx, name);
          info.flags = negotiatedFlags(info, input);
        } catch (e) {
          await io.backend.close(opened, false).catch(() => {});
          throw e;
        }
        // INFO, or the client went away meanwhile: nothing is held.
        if (!input.keep || signal.aborted) {
          await io.backend.close(opened, true).catch((e) => io.log(`close: ${errorMessage(e)}`));
          return { info, opened: null, asked: input.name };
        }
        return { info, opened, asked: input.name };
      }),
    },
    actions: {
      replyInfo: ({ context, event, system }: { context: OptionsContext; event: { output: OpenOutput }; system: object }) => {
        const io = ioOf({ system });
        const opt = context.current!.option;
        const i = event.output.info;
        const infos = context.current?.infos ?? [];
        io.reply(opt, C.NBD_REP_INFO, encodeInfoReply({ type: C.NBD_INFO_EXPORT, size: i.size, transmissionFlags: i.flags }));
        if (infos.includes(C.NBD_INFO_NAME)) io.reply(opt, C.NBD_REP_INFO, encodeInfoReply({ type: C.NBD_INFO_NAME, name: i.name }));
        if (infos.includes(C.NBD_INFO_DESCRIPTION) && i.description !== null) {
          io.reply(opt, C.NBD_REP_INFO, encodeInfoReply({ type: C.NBD_INFO_DESCRIPTION, description: i.description }));
        }
        // As nbdkit: block size constraints only when a layer has some.
        if (infos.includes(C.NBD_INFO_BLOCK_SIZE) && i.blockSize) {
          io.reply(opt, C.NBD_REP_INFO, encodeInfoReply({ type: C.NBD_INFO_BLOCK_SIZE, ...i.blockSize }));
        }
        io.reply(opt, C.NBD_REP_ACK);
      },
      replyExportName: ({ event, system }: { event: { output: OpenOutput }; system: object }) => {
        const io = ioOf({ system });
        const i = event.output.info;
        io.write(encodeExportNameReply(i.size, i.flags, io.noZeroes));
      },
    },
  };
}
