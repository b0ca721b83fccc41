// Errors the NBD client raises.

import { COMMAND_NAMES, ERROR_NAMES, OPTION_NAMES, REPLY_NAMES } from "../protocol/constants.js";

/** Name of an option reply type, e.g. "NBD_REP_ERR_UNKNOWN" (or a numbered fallback). */
export function replyName(type: number): string {
  return REPLY_NAMES[type] ?? `NBD_REP_${type >= 0x80000000 ? "ERR_" : ""}${type >>> 0}`;
}
/** Name of an option, e.g. "NBD_OPT_GO". */
export function optionName(option: number): string {
  return OPTION_NAMES[option] ?? `NBD_OPT_${option >>> 0}`;
}
/** Name of an NBD error number, e.g. "EINVAL" (or "E<n>" when the spec names none). */
export function errnoName(errno: number): string {
  return ERROR_NAMES[errno] ?? `E${errno >>> 0}`;
}
/** Name of a command, e.g. "NBD_CMD_READ". */
export function commandName(type: number): string {
  return COMMAND_NAMES[type] ?? `NBD_CMD_${type}`;
}

/** The server answered an option with an error reply (NBD_REP_ERR_*). */
export class NbdOptionError extends Error {
  override name = "NbdOptionError";
  readonly optionName: string;
  readonly replyName: string;
  constructor(
    readonly option: number,
    readonly replyType: number,
    readonly serverMessage = "",
  ) {
    super(`${optionName(option)} failed: ${replyName(replyType)}${serverMessage ? `: ${serverMessage}` : ""}`);
    this.optionName = optionName(option);
    this.replyName = replyName(replyType);
  }
}

/** A transmission request failed; errno is the NBD error number (22 = EINVAL, ...). */
export class NbdRequestError extends Error {
  override name = "NbdRequestError";
  /** errno name, e.g. "EINVAL"; also exposed as `code` like Node's system errors. */
  readonly errnoName: string;
  readonly code: string;
  readonly commandName: string;
  constructor(
    readonly errno: number,
    readonly command: number,
    readonly serverMessage = "",
    /** From NBD_REPLY_TYPE_ERROR_OFFSET: where the failure happened. */
    readonly offset?: number,
  ) {
    super(
      `${commandName(command)} failed: ${errnoName(errno)} (${errno})` +
        (serverMessage ? `: ${serverMessage}` : "") +
        (offset !== undefined ? ` at offset ${offset}` : ""),
    );
    this.errnoName = this.code = errnoName(errno);
    this.commandName = commandName(command);
  }
}

/** The server broke the protocol (bad magic, unknown cookie, impossible length...). */
export class NbdProtocolError extends Error {
  override name = "NbdProtocolError";
}

/** The connection is gone; every request in flight at that moment fails with this. */
export class NbdDisconnectedError extends Error {
  override name = "NbdDisconnectedError";
  readonly code = "ECONNRESET";
}
