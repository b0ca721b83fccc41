// What one NBD option is, as data: its payload decoder, its transitions and
// guards in the options machine, the states it adds, and its effects
// (replies, backend calls), which the connection's runner provides. The
// options machine (src/machines/options.ts) is assembled from these
// records; adding an option is adding a record.
//
// Rules that hold for every option are not in the records: the option
// budget, TLS-required and malformed payloads are checked once, before any
// record's own transitions (src/options/assemble.ts), as nbdkit checks them
// before its switch.

import type { Opened } from "../backend/chain.js";
import type { Of } from "../machines/effects.js";
import type { ExportEntry, ListParams } from "../backend/types.js";
import type { ExportInfo } from "./export-info.js";

/** Option errors by their spec name (src/protocol/constants.ts has the numbers). */
export type RepError =
  | "NBD_REP_ERR_UNSUP" | "NBD_REP_ERR_POLICY" | "NBD_REP_ERR_INVALID" | "NBD_REP_ERR_PLATFORM" | "NBD_REP_ERR_TLS_REQD"
  | "NBD_REP_ERR_UNKNOWN" | "NBD_REP_ERR_SHUTDOWN" | "NBD_REP_ERR_BLOCK_SIZE_REQD" | "NBD_REP_ERR_TOO_BIG"
  | "NBD_REP_ERR_EXT_HEADER_REQD";

export type TlsMode = "off" | "on" | "require";

/** The option being handled: its number and decoded payload. */
export interface CurrentOption {
  option: number;
  /** Payload bytes (for "takes no data" checks). */
  length: number;
  /** Why the payload is not what the spec says (then the option is refused). */
  malformed?: string;
  /** INFO, GO, EXPORT_NAME: the export asked for. */
  name?: string;
  /** INFO, GO: NBD_INFO_* requested. */
  infos?: number[];
  /** LIST/SET_META_CONTEXT: the export and the queries. */
  exportName?: string;
  queries?: string[];
  /** LIST_HIER: the tree path asked for. */
  path?: string;
}

export interface MetaSelection {
  exportName: string;
  contexts: { id: number; name: string }[];
}

/** The export NBD_OPT_GO or NBD_OPT_EXPORT_NAME chose: its context chain and what the client was told. */
export interface Chosen {
  opened: Opened;
  info: ExportInfo;
  /** The name the client asked for ("" for the default export). */
  asked: string;
}

export interface OptionsContext {
  optionCount: number;
  maxOptions: number;
  /** Largest listing sent: each listed export may cost a few more options (nbdinfo --list asks per export). */
  listed: number;
  tls: TlsMode;
  tlsActive: boolean;
  structuredReplies: boolean;
  extendedHeaders: boolean;
  /** --no-sr: structured replies (and extended headers) are refused. */
  noStructuredReplies: boolean;
  /** --no-mc: meta contexts are refused. */
  noMetaContexts: boolean;
  current: CurrentOption | null;
  meta: MetaSelection | null;
  chosen: Chosen | null;
  /** SHUTDOWN arrived while an option was in progress: close once it is answered. */
  shuttingDown: boolean;
  reason?: string;
}

export interface OptionsInput {
  maxOptions?: number;
  tls?: TlsMode;
  noStructuredReplies?: boolean;
  noMetaContexts?: boolean;
}

/** What negotiation carries into transmission. */
export interface OptionsOutput {
  transmission: boolean;
  chosen: Chosen | null;
  structuredReplies: boolean;
  extendedHeaders: boolean;
  /** The meta contexts selected for the chosen export (by id). */
  metaContexts: { id: number; name: string }[];
  reason?: string;
}

/** The stack, as negotiation reaches it (by message, through the backend actor). */
export interface OptionsBackend {
  listExports(p: ListParams): Promise<ExportEntry[]>;
  defaultExport(p: ListParams): Promise<string | null>;
  open(readonly: boolean, exportName: string, tls: boolean): Promise<Opened>;
  close(opened: Opened, finalize: boolean): Promise<void>;
  metaContexts(exportName: string): Promise<string[]>;
}

/** What an option's effects may do on the connection. */
export interface OptionsIO {
  /** An option reply frame. */
  reply(option: number, type: number, data?: Buffer): void;
  /** Raw bytes (the NBD_OPT_EXPORT_NAME reply has its own format). */
  write(b: Buffer): void;
  backend: OptionsBackend;
  readonly: boolean;
  /** The client set NBD_FLAG_C_NO_ZEROES. */
  noZeroes: boolean;
  /** After the STARTTLS ACK: resolves once TLS is up (absent: TLS is not configured). */
  startTls?: () => Promise<void>;
  log(msg: string): void;
}

export type Effects = { actions?: Record<string, unknown>; actors?: Record<string, unknown> };

/**
 * The connection an effect runs for. The machines are provided once per
 * server, so an effect is not a closure over one connection: it finds its
 * connection's IO from the actor system it runs in (every actor of one
 * connection shares one system), `io(args)` with the args XState passes.
 */
export type IoOf = Of<OptionsIO>;

export interface OptionRecord {
  /** The NBD_OPT_* number. */
  option: number;
  /** The machine event, as the spec names the option. */
  event: string;
  /** Payload to the current option's fields; set `malformed` when the spec says the payload is wrong. */
  decode(payload: Buffer): Omit<CurrentOption, "option" | "length">;
  /** Before TLS with --tls=require: refused with TLS_REQD (default), allowed, or the connection is closed. */
  beforeTls?: "refuse" | "allow" | "close";
  /** A malformed payload: NBD_REP_ERR_INVALID (default), or the connection is closed. */
  onMalformed?: "invalid" | "close";
  /** Actions whenever the option is taken, before any rule (a SET_META_CONTEXT replaces the selection even when refused). */
  onTake?: readonly unknown[];
  /** This option's transitions in AWAIT_OPTION, after the common checks. */
  transitions: readonly unknown[];
  /** States this option adds (several records may share one by giving the same config). */
  states?: Record<string, unknown>;
  guards?: Record<string, unknown>;
  /** Pure actions (assign) and declared effects (declaredAction). */
  actions?: Record<string, unknown>;
  /** Declared invoked effects (declaredActor). */
  actors?: Record<string, unknown>;
  /** The implementations of its declared effects, each over the IO of the connection it runs for. */
  effects?(io: IoOf): Effects;
  /**
   * Payloads worth sending in a model walk (tests replay the machine's
   * paths with these as real frames): the good and the malformed ones.
   */
  examples?: Buffer[];
}
