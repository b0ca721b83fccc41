// Option haggling (fixed newstyle): the raw option exchange and the typed
// options built on it. Pure protocol over a send/read channel.

import {
  NBD_EXPORT_NAME_PADDING,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_EXPORT,
  NBD_INFO_NAME,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_HIER,
  NBD_REP_ACK,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
  NBD_REP_SERVER_DIR,
} from "../protocol/constants.js";
import {
  type InfoReply,
  decodeExportNameReply,
  decodeInfoReply,
  decodeMetaContextReply,
  decodeOptionReplyHeader,
  decodeServerReply,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOption,
} from "../protocol/wire.js";
import { decodeServerDirReply, encodeHierRequest, NBD_DIR_FLAG_EXPORT } from "../protocol/wire-options.js";
import { NbdOptionError, NbdProtocolError, optionName, replyName } from "./errors.js";

/** Largest option reply payload accepted. */
export const MAX_OPTION_REPLY = 16 * 1024 * 1024;

/** What option haggling needs from the connection. */
export interface OptionChannel {
  send(buf: Buffer): void;
  read(n: number): Promise<Buffer>;
}

/** One option reply frame. */
export interface OptionReply {
  type: number;
  typeName: string;
  data: Buffer;
}

export interface BlockSize {
  minimum: number;
  preferred: number;
  maximum: number;
}

/** What NBD_OPT_INFO / NBD_OPT_GO / NBD_OPT_EXPORT_NAME tell about an export. */
export interface ExportInfo {
  size: number;
  transmissionFlags: number;
  name?: string;
  description?: string;
  blockSize?: BlockSize;
  /** Every NBD_REP_INFO received, decoded (unknown types as raw). */
  infos: InfoReply[];
}

export interface ExportEntry {
  name: string;
  description: string;
}

export interface MetaContext {
  id: number;
  name: string;
}

/** True for NBD_REP_ERR_* (bit 31 set). */
export const isErrorReply = (type: number): boolean => type >= 0x80000000;

/** Read one option reply frame and check it answers `option`. */
export async function readOptionReply(ch: OptionChannel, option: number): Promise<OptionReply> {
  const h = decodeOptionReplyHeader(await ch.read(20));
  if (h.option !== option) {
    throw new NbdProtocolError(`option reply for ${optionName(h.option)} while waiting for ${optionName(option)}`);
  }
  if (h.length > MAX_OPTION_REPLY) throw new NbdProtocolError(`option reply too large: ${h.length} bytes`);
  const data = await ch.read(h.length);
  return { type: h.type, typeName: replyName(h.type), data };
}

/** Send an option and collect reply frames up to the final one (ACK or error). */
export async function rawOption(ch: OptionChannel, option: number, payload?: Buffer): Promise<OptionReply[]> {
  if (option === NBD_OPT_EXPORT_NAME) throw new Error("use exportName(): NBD_OPT_EXPORT_NAME has no option reply");
  ch.send(encodeOption(option, payload));
  const frames: OptionReply[] = [];
  for (;;) {
    const r = await readOptionReply(ch, option);
    frames.push(r);
    if (r.type === NBD_REP_ACK || isErrorReply(r.type)) return frames;
  }
}

/** Like rawOption, but an error reply throws NbdOptionError; returns the non-final frames. */
export async function checkedOption(ch: OptionChannel, option: number, payload?: Buffer): Promise<OptionReply[]> {
  const frames = await rawOption(ch, option, payload);
  const last = frames.pop()!;
  if (isErrorReply(last.type)) throw new NbdOptionError(option, last.type, last.data.toString("utf8"));
  return frames;
}

function expect(frame: OptionReply, type: number, option: number): void {
  if (frame.type !== type) {
    throw new NbdProtocolError(`unexpected ${frame.typeName} in reply to ${optionName(option)}`);
  }
}

/** NBD_OPT_LIST: the exports the server offers. */
export async function listExports(ch: OptionChannel): Promise<ExportEntry[]> {
  const frames = await checkedOption(ch, NBD_OPT_LIST);
  return frames.map((f) => {
    expect(f, NBD_REP_SERVER, NBD_OPT_LIST);
    return decodeServerReply(f.data);
  });
}

/** One node of NBD_OPT_LIST_HIER's reply (experimental, docs/list-hier.md). */
export interface HierEntry {
  /** The full export name, or the directory's name (list it with name + ':'). */
  name: string;
  description: string;
  /** An export of this name can be opened. */
  isExport: boolean;
  /** More names are below it. */
  isDir: boolean;
}

/** NBD_OPT_LIST_HIER: one level of the export tree under PATH ("" or ending in ':'). */
export async function listHier(ch: OptionChannel, path: string): Promise<HierEntry[]> {
  const frames = await checkedOption(ch, NBD_OPT_LIST_HIER, encodeHierRequest(path));
  return frames.map((f) => {
    if (f.type === NBD_REP_SERVER) {
      const r = decodeServerReply(f.data);
      return { name: r.name, description: r.description, isExport: true, isDir: false };
    }
    expect(f, NBD_REP_SERVER_DIR, NBD_OPT_LIST_HIER);
    const d = decodeServerDirReply(f.data);
    return { name: d.name, description: d.description, isExport: (d.flags & NBD_DIR_FLAG_EXPORT) !== 0, isDir: true };
  });
}

/** NBD_OPT_INFO or NBD_OPT_GO with the given NBD_INFO_* requests. */
export async function infoOrGo(ch: OptionChannel, option: typeof NBD_OPT_INFO | typeof NBD_OPT_GO, name: string, requests: readonly number[]): Promise<ExportInfo> {
  const frames = await checkedOption(ch, option, encodeInfoRequest(name, requests));
  const out: Partial<ExportInfo> & { infos: InfoReply[] } = { infos: [] };
  for (const f of frames) {
    expect(f, NBD_REP_INFO, option);
    const info = decodeInfoReply(f.data);
    out.infos.push(info);
    if (info.type === NBD_INFO_EXPORT && "size" in info) {
      out.size = info.size;
      out.transmissionFlags = info.transmissionFlags;
    } else if (info.type === NBD_INFO_NAME && "name" in info) out.name = info.name;
    else if (info.type === NBD_INFO_DESCRIPTION && "description" in info) out.description = info.description;
    else if (info.type === NBD_INFO_BLOCK_SIZE && "minimum" in info) {
      out.blockSize = { minimum: info.minimum, preferred: info.preferred, maximum: info.maximum };
    }
  }
  if (out.size === undefined) throw new NbdProtocolError(`${optionName(option)} succeeded without NBD_INFO_EXPORT`);
  return out as ExportInfo;
}

/** NBD_OPT_LIST_META_CONTEXT or NBD_OPT_SET_META_CONTEXT. */
export async function metaContext(ch: OptionChannel, option: number, exportName: string, queries: readonly string[]): Promise<MetaContext[]> {
  const frames = await checkedOption(ch, option, encodeMetaContextRequest(exportName, queries));
  return frames.map((f) => {
    expect(f, NBD_REP_META_CONTEXT, option);
    return decodeMetaContextReply(f.data);
  });
}

/** NBD_OPT_EXPORT_NAME: no option reply; the server sends size and flags or hangs up. */
export async function exportNameOption(ch: OptionChannel, name: string, noZeroes: boolean): Promise<ExportInfo> {
  ch.send(encodeOption(NBD_OPT_EXPORT_NAME, Buffer.from(name, "utf8")));
  let reply: Buffer;
  try {
    reply = await ch.read(10 + (noZeroes ? 0 : NBD_EXPORT_NAME_PADDING));
  } catch (err) {
    throw new Error(`NBD_OPT_EXPORT_NAME ${JSON.stringify(name)}: the server closed the connection (export refused?)`, { cause: err });
  }
  return { ...decodeExportNameReply(reply), infos: [] };
}

