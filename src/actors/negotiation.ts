// Runs the handshake and options machines over one socket: decodes each
// option frame into the machine's event, and supplies the side effects
// (replies, listing, opening the export) the machine names.

import { createActor, type InspectionEvent } from "xstate";
import type { Duplex } from "node:stream";
import { handshakeMachine } from "../machines/handshake.js";
import { optionsMachine, type OptionsEvent, type TlsMode } from "../machines/options.js";
import * as C from "../protocol/constants.js";
import {
  decodeInfoRequest, decodeMetaContextRequest, encodeExportNameReply, encodeGreeting, encodeInfoReply,
  encodeMetaContextReply, encodeOptionReply, encodeServerReply, WireError,
} from "../protocol/wire.js";
import { errorMessage, toNbdErrno } from "../backend/errors.js";
import { isNbdString } from "../protocol/strings.js";
import type { Opened } from "../backend/chain.js";
import type { ExportEntry, ListParams } from "../backend/types.js";
import { ByteQueue, EofError } from "./byte-queue.js";
import { transmissionFlags, type ExportInfo } from "./export-info.js";

/** What a connection asks of the backend actor (by message). */
export interface BackendClient {
  listExports(p: ListParams): Promise<ExportEntry[]>;
  defaultExport(p: ListParams): Promise<string | null>;
  open(readonly: boolean, exportName: string, tls: boolean): Promise<Opened>;
  close(opened: Opened, finalize: boolean): Promise<void>;
}

export interface NegotiationOptions {
  readonly: boolean;
  tls: TlsMode;
  maxOptions?: number;
  /** From the greeting until the client's flags arrive (0: no limit). */
  handshakeTimeoutMs?: number;
  /** Idle time allowed between options (0: no limit). */
  optionTimeoutMs?: number;
  inspect?: (ev: InspectionEvent) => void;
  /** Called with each phase change, for the status page. */
  onPhase?: (phase: string) => void;
  /**
   * STARTTLS, called synchronously right after the ACK is written: stops
   * reading the raw socket, discards what the client sent before the
   * upgrade, and resolves with the TLS socket once the handshake is done
   * (rejects if it fails). Absent: TLS is not configured.
   */
  startTls?: () => Promise<Duplex>;
}

export interface Negotiated {
  opened: Opened;
  info: ExportInfo;
  structuredReplies: boolean;
  /** The id of base:allocation if the client selected it, else 0. */
  baseAllocationId: number;
}

const BASE_ALLOCATION_ID = 1;

function optionEvent(option: number, data: Buffer): OptionsEvent {
  const malformed = { malformed: true } as const;
  switch (option) {
    case C.NBD_OPT_EXPORT_NAME:
      return { type: "NBD_OPT_EXPORT_NAME", name: data.toString("utf8") };
    case C.NBD_OPT_ABORT:
      return { type: "NBD_OPT_ABORT" };
    case C.NBD_OPT_LIST:
      return { type: "NBD_OPT_LIST", length: data.length };
    case C.NBD_OPT_STARTTLS:
      return { type: "NBD_OPT_STARTTLS", length: data.length };
    case C.NBD_OPT_STRUCTURED_REPLY:
      return { type: "NBD_OPT_STRUCTURED_REPLY", length: data.length };
    case C.NBD_OPT_INFO:
    case C.NBD_OPT_GO: {
      const type = option === C.NBD_OPT_GO ? "NBD_OPT_GO" : "NBD_OPT_INFO";
      try {
        const r = decodeInfoRequest(data);
        if (!isNbdString(r.name)) return { type, name: "", infos: [], ...malformed };
        return { type, name: r.name, infos: r.requests };
      } catch (e) {
        if (e instanceof WireError) return { type, name: "", infos: [], ...malformed };
        throw e;
      }
    }
    case C.NBD_OPT_LIST_META_CONTEXT:
    case C.NBD_OPT_SET_META_CONTEXT: {
      const type = option === C.NBD_OPT_SET_META_CONTEXT ? "NBD_OPT_SET_META_CONTEXT" : "NBD_OPT_LIST_META_CONTEXT";
      try {
        const r = decodeMetaContextRequest(data);
        if (!isNbdString(r.exportName) || !r.queries.every(isNbdString)) return { type, exportName: "", queries: [], ...malformed };
        return { type, exportName: r.exportName, queries: r.queries };
      } catch (e) {
        if (e instanceof WireError) return { type, exportName: "", queries: [], ...malformed };
        throw e;
      }
    }
    default:
      return { type: "NBD_OPT_UNKNOWN", option };
  }
}

/** Resolves once the socket's write buffer is below its high-water mark (or it is gone). */
function drained(socket: Duplex): Promise<void> {
  if (!socket.writableNeedDrain || socket.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      socket.off("drain", done);
      socket.off("close", done);
      resolve();
    };
    socket.on("drain", done);
    socket.on("close", done);
  });
}


/** Which meta contexts a query list selects (only base:allocation exists). */
export function matchMetaContexts(queries: string[], list: boolean): string[] {
  if (queries.length === 0) return list ? [C.BASE_ALLOCATION] : [];
  // "base:" (the namespace alone) lists every base: context, for LIST only.
  const hit = queries.some((q) => q === C.BASE_ALLOCATION || (list && q === "base:"));
  return hit ? [C.BASE_ALLOCATION] : [];
}

export async function negotiate(raw: Duplex, queue: ByteQueue, backend: BackendClient, o: NegotiationOptions): Promise<Negotiated | null> {
  // The raw socket, replaced by the TLS socket after STARTTLS.
  let socket = raw;
  const write = (b: Buffer) => socket.write(b);
  let currentOption = 0;
  const reply = (type: number, data?: Buffer) => write(encodeOptionReply(currentOption, type, data));

  // ---- handshake
  const hs = createActor(
    handshakeMachine.provide({
      actions: {
        sendGreeting: () => write(encodeGreeting(C.NBD_FLAG_FIXED_NEWSTYLE | C.NBD_FLAG_NO_ZEROES)),
        closeConnection: () => socket.destroy(),
      },
    }),
    { inspect: o.inspect },
  );
  hs.subscribe({ error: () => {} });
  hs.start();
  o.onPhase?.("handshake");
  // A timeout is a machine event; ending the queue then unblocks the read.
  const timed = async <T>(p: Promise<T>, ms: number | undefined, onTimeout: () => void): Promise<T> => {
    if (!ms) return p;
    const t = setTimeout(() => {
      onTimeout();
      queue.end();
    }, ms);
    try {
      return await p;
    } finally {
      clearTimeout(t);
    }
  };
  try {
    const flags = (await timed(queue.read(4), o.handshakeTimeoutMs, () => hs.send({ type: "TIMEOUT" }))).readUInt32BE(0);
    hs.send({ type: "CLIENT_FLAGS", flags });
  } catch (e) {
    if (!(e instanceof EofError)) throw e;
    if (hs.getSnapshot().status === "active") hs.send({ type: "CLIENT_CLOSED" });
  }
  const hsOut = hs.getSnapshot().output!;
  hs.stop();
  if (!hsOut.ok) return null;

  // ---- options
  let tls = false; // true once STARTTLS has succeeded
  const p = () => ({ readonly: o.readonly, tls });
  let opened: Opened | null = null;
  let info: ExportInfo | null = null;
  let metaSet: { exportName: string; names: string[] } | null = null;
  let lastEvent: OptionsEvent | null = null;

  const report = (ev: OptionsEvent) => queueMicrotask(() => opts.send(ev));

  const openExport = async () => {
    const ev = lastEvent!;
    const requested = "name" in ev ? ev.name : "";
    try {
      let name = requested;
      if (name === "") {
        const d = await backend.defaultExport(p());
        if (d === null) throw new Error("this server has no default export");
        name = d;
      }
      opened = await backend.open(o.readonly, name, tls);
      info = await transmissionFlags(opened.ctx, name);
      // "NBD_FLAG_SEND_DF ... only if structured replies have been negotiated".
      if (!opts.getSnapshot().context.structuredReplies) info.flags &= ~C.NBD_FLAG_SEND_DF;
      report({ type: "EXPORT_READY" });
    } catch (err) {
      report({ type: "EXPORT_FAILED", error: "NBD_REP_ERR_UNKNOWN", message: `${requested}: ${errorMessage(err)}` });
    }
  };

  const opts = createActor(
    optionsMachine.provide({
      actions: {
        replyAck: () => reply(C.NBD_REP_ACK),
        replyError: (_, params) => reply(C[params.error], Buffer.from(params.message.slice(0, 1024))),
        listExports: () => {
          backend.listExports(p()).then(
            (list) => {
              for (const e of list) reply(C.NBD_REP_SERVER, encodeServerReply(e.name, e.description ?? ""));
              reply(C.NBD_REP_ACK);
              report({ type: "EXPORTS_LISTED" });
            },
            // A listing refused by policy (EPERM, e.g. exportname-list=error)
            // is NBD_REP_ERR_POLICY; any other failure is the server's,
            // NBD_REP_ERR_PLATFORM as nbdkit sends (not INVALID: the
            // client's option was fine). Negotiation continues either way.
            (err) => report({
              type: "LIST_FAILED",
              error: toNbdErrno(err) === C.NBD_EPERM ? "NBD_REP_ERR_POLICY" : "NBD_REP_ERR_PLATFORM",
              message: errorMessage(err),
            }),
          );
        },
        openExport: () => void openExport(),
        replyInfo: () => {
          const ev = lastEvent!;
          const i = info!;
          const infos = "infos" in ev ? ev.infos : [];
          write(encodeOptionReply(currentOption, C.NBD_REP_INFO, encodeInfoReply({ type: C.NBD_INFO_EXPORT, size: i.size, transmissionFlags: i.flags })));
          if (infos.includes(C.NBD_INFO_NAME)) reply(C.NBD_REP_INFO, encodeInfoReply({ type: C.NBD_INFO_NAME, name: i.name }));
          if (infos.includes(C.NBD_INFO_DESCRIPTION) && i.description !== null) {
            reply(C.NBD_REP_INFO, encodeInfoReply({ type: C.NBD_INFO_DESCRIPTION, description: i.description }));
          }
          if (infos.includes(C.NBD_INFO_BLOCK_SIZE)) reply(C.NBD_REP_INFO, encodeInfoReply({ type: C.NBD_INFO_BLOCK_SIZE, ...i.blockSize }));
          reply(C.NBD_REP_ACK);
        },
        closeExport: () => {
          const toClose = opened;
          opened = null;
          if (toClose) void backend.close(toClose, true).catch(() => {});
        },
        replyExportName: () => write(encodeExportNameReply(info!.size, info!.flags, hsOut.noZeroes)),
        replyMetaContexts: (_, params) => {
          const ev = lastEvent as Extract<OptionsEvent, { queries: string[] }>;
          const names = matchMetaContexts(ev.queries, !params.set);
          if (params.set) metaSet = { exportName: ev.exportName, names };
          for (const n of names) reply(C.NBD_REP_META_CONTEXT, encodeMetaContextReply(BASE_ALLOCATION_ID, n));
          reply(C.NBD_REP_ACK);
        },
        startTls: () => {
          const upgrade = o.startTls;
          // Not configured (the server refuses --tls without credentials): close.
          if (!upgrade) return report({ type: "TLS_FAILED", message: "TLS is not configured" });
          reply(C.NBD_REP_ACK);
          // Synchronously after the ACK: nothing the client sent before it is read as an option.
          upgrade().then(
            (secure) => {
              socket = secure;
              tls = true;
              // Meta contexts set in clear text are forgotten (the machine drops structured replies).
              metaSet = null;
              report({ type: "TLS_READY" });
            },
            (err) => report({ type: "TLS_FAILED", message: errorMessage(err) }),
          );
        },
        closeConnection: () => socket.end(),
      },
    }),
    { input: { tls: o.tls, maxOptions: o.maxOptions }, inspect: o.inspect },
  );
  opts.subscribe({ error: () => {} });
  opts.start();
  o.onPhase?.("options");

  // Options are strictly one at a time: "The client MUST NOT send any
  // option until it has received a final reply to any option it has sent".
  const settled = () =>
    new Promise<void>((resolve) => {
      const check = () => {
        const s = opts.getSnapshot();
        if (s.status !== "active" || s.value === "AWAIT_OPTION") {
          sub.unsubscribe();
          resolve();
        }
      };
      const sub = opts.subscribe(check);
      check();
    });

  try {
    while (opts.getSnapshot().status === "active") {
      const head = await timed(queue.read(16), o.optionTimeoutMs, () => opts.send({ type: "TIMEOUT" }));
      if (head.readBigUInt64BE(0) !== C.IHAVEOPT) throw new WireError("bad option magic");
      currentOption = head.readUInt32BE(8);
      const length = head.readUInt32BE(12);
      o.onPhase?.(C.OPTION_NAMES[currentOption] ?? `option ${currentOption}`);
      // Far too long to be honest: hang up rather than read it (spec: a
      // server MAY hard-disconnect a client it deems a denial of service).
      if (length > C.MAX_SKIPPED_OPTION_LENGTH) throw new WireError(`option length ${length} is too large`);
      if (length > C.MAX_OPTION_LENGTH) {
        await queue.skip(length);
        lastEvent = { type: "OPTION_TOO_LARGE", option: currentOption };
      } else {
        lastEvent = optionEvent(currentOption, await queue.read(length));
      }
      opts.send(lastEvent);
      await settled();
      // Back-pressure: a client that sends options without reading the
      // replies (a listing can be megabytes) must not make the server
      // buffer them all; read the next option only once they are out.
      await drained(socket);
      o.onPhase?.("options");
    }
  } catch (e) {
    if (e instanceof EofError) {
      if (opts.getSnapshot().status === "active") opts.send({ type: "CLIENT_CLOSED" });
    }
    else if (e instanceof WireError) {
      opts.stop();
      socket.destroy();
    } else throw e;
  }
  const snap = opts.getSnapshot();
  opts.stop();
  const out = snap.output;
  if (!out?.transmission || !opened || !info) {
    if (opened) await backend.close(opened, false).catch(() => {});
    return null;
  }
  const chosen: Opened = opened;
  const chosenInfo: ExportInfo = info;
  // Meta contexts apply only to the export they were set for (nbdkit too).
  const selected = metaSet as { exportName: string; names: string[] } | null;
  const useMeta = out.structuredReplies && selected !== null && selected.names.length > 0 &&
    (selected.exportName === out.exportName || selected.exportName === chosenInfo.name);
  return {
    opened: chosen,
    info: chosenInfo,
    structuredReplies: out.structuredReplies,
    baseAllocationId: useMeta ? BASE_ALLOCATION_ID : 0,
  };
}
