// Public surface of the NBD client.
export { NbdClient, type Phase } from "./client.js";
export { openClient, type OpenOptions } from "./open.js";
export type { ConnectOptions, ConnectTarget, HandshakeOptions } from "./handshake.js";
export { clientTlsFromFiles, type ClientTls, type TlsFiles } from "./tls.js";
export type { BlockSize, ExportEntry, ExportInfo, MetaContext, OptionReply } from "./options.js";
export type { RawReply, ReplyFrame } from "./replies.js";
export type { RawRequest } from "./raw.js";
export { RawAccess } from "./raw.js";
export { parseNbdUri, openNbdUri, type NbdUri } from "./uri.js";
export {
  NbdDisconnectedError,
  NbdOptionError,
  NbdProtocolError,
  NbdRequestError,
  commandName,
  errnoName,
  optionName,
  replyName,
} from "./errors.js";
