// Per-request checks of the transmission phase: which flags each command
// may carry, what the export advertised, and the ranges (checkRequest
// returns the NBD error to send, or 0 when the request may go down the
// stack); then the call down the stack for the commands that answer
// without data.

import * as C from "../protocol/constants.js";
import * as T from "../protocol/transmission.js";
import { FLAG_FAST_ZERO, FLAG_FUA, FLAG_MAY_TRIM, FLAG_REQ_ONE, type Context } from "../backend/types.js";
import type { ExportInfo } from "../options/export-info.js";

// "NBD_CMD_FLAG_FUA; This flag is valid for all commands, provided
// NBD_FLAG_SEND_FUA has been negotiated, in which case the server MUST
// accept all commands with this bit set (even by ignoring the bit)."
const FUA = C.NBD_CMD_FLAG_FUA;
const ALLOWED_FLAGS: Record<number, number> = {
  [C.NBD_CMD_READ]: FUA | C.NBD_CMD_FLAG_DF,
  [C.NBD_CMD_WRITE]: FUA,
  [C.NBD_CMD_FLUSH]: FUA,
  [C.NBD_CMD_TRIM]: FUA,
  [C.NBD_CMD_CACHE]: FUA,
  [C.NBD_CMD_WRITE_ZEROES]: FUA | C.NBD_CMD_FLAG_NO_HOLE | C.NBD_CMD_FLAG_FAST_ZERO,
  [C.NBD_CMD_BLOCK_STATUS]: FUA | C.NBD_CMD_FLAG_REQ_ONE,
};

/** The transmission flag a command needs advertised before a client may send it. */
const NEEDS_FLAG: Record<number, number> = {
  [C.NBD_CMD_FLUSH]: C.NBD_FLAG_SEND_FLUSH,
  [C.NBD_CMD_TRIM]: C.NBD_FLAG_SEND_TRIM,
  [C.NBD_CMD_CACHE]: C.NBD_FLAG_SEND_CACHE,
  [C.NBD_CMD_WRITE_ZEROES]: C.NBD_FLAG_SEND_WRITE_ZEROES,
};

export interface RequestLimits {
  info: ExportInfo;
  structuredReplies: boolean;
  extendedHeaders: boolean;
  /** How many meta contexts the client selected (BLOCK_STATUS needs one). */
  contexts: number;
}

/**
 * The NBD error for a request header, or 0. `count` is the effect length
 * (for WRITE, and for BLOCK_STATUS in its payload form, the one the caller
 * took from the payload).
 */
export function checkRequest(l: RequestLimits, type: number, flags: number, offset: number, count: number): number {
  const allowed = ALLOWED_FLAGS[type];
  if (allowed === undefined) return C.NBD_EINVAL; // unknown command
  // "NBD_CMD_FLAG_PAYLOAD_LEN; only valid if extended headers were
  // negotiated"; "the flag MUST be set for NBD_CMD_WRITE".
  if (flags & C.NBD_CMD_FLAG_PAYLOAD_LEN) {
    if (!l.extendedHeaders) return C.NBD_EINVAL;
    if (type === C.NBD_CMD_BLOCK_STATUS && !(l.info.flags & C.NBD_FLAG_BLOCK_STATUS_PAYLOAD)) return C.NBD_EINVAL;
    if (type !== C.NBD_CMD_WRITE && type !== C.NBD_CMD_BLOCK_STATUS) return C.NBD_EINVAL;
    flags &= ~C.NBD_CMD_FLAG_PAYLOAD_LEN;
  }
  // An extended WRITE without the flag is taken as it comes (qemu 10 sends
  // them so; transmission.ts reads its payload either way).
  if (flags & ~allowed) return C.NBD_EINVAL;
  const info = l.info;
  const writes = type === C.NBD_CMD_WRITE || type === C.NBD_CMD_TRIM || type === C.NBD_CMD_WRITE_ZEROES;
  // "the server MUST fail ... writes with EPERM" on a read-only export.
  if (writes && !info.canWrite) return C.NBD_EPERM;
  const need = NEEDS_FLAG[type];
  if (need !== undefined && !(info.flags & need)) return C.NBD_EINVAL;
  if (flags & C.NBD_CMD_FLAG_FUA && !info.canFua) return C.NBD_EINVAL;
  if (flags & C.NBD_CMD_FLAG_FAST_ZERO && !(info.flags & C.NBD_FLAG_SEND_FAST_ZERO)) return C.NBD_EINVAL;
  if (flags & C.NBD_CMD_FLAG_DF && !l.structuredReplies) return C.NBD_EINVAL;
  if (type === C.NBD_CMD_BLOCK_STATUS && l.contexts === 0) return C.NBD_EINVAL;
  if (type === C.NBD_CMD_FLUSH) return offset === 0 && count === 0 ? 0 : C.NBD_EINVAL;
  if ((type === C.NBD_CMD_READ || type === C.NBD_CMD_WRITE) && count > C.MAX_REQUEST_SIZE) return C.NBD_EINVAL;
  // "The client SHOULD NOT request a ... length of 0": nbdstate refuses it
  // for every command (docs/protocol-notes.md says why).
  if (count === 0) return C.NBD_EINVAL;
  if (offset > info.size || count > info.size - offset) {
    // Writing data or zeroes past the end is "no space" (spec: "SHOULD
    // return NBD_ENOSPC" for writes beyond the end); the rest, as nbdkit, EINVAL.
    return type === C.NBD_CMD_WRITE || type === C.NBD_CMD_WRITE_ZEROES ? C.NBD_ENOSPC : C.NBD_EINVAL;
  }
  return 0;
}

/** NBD command flags to the stack's request flags (src/backend/types.ts). */
export function stackFlags(type: number, flags: number): number {
  let f = 0;
  // FUA reaches the stack only on commands that write (elsewhere it is ignored).
  const writes = type === C.NBD_CMD_WRITE || type === C.NBD_CMD_TRIM || type === C.NBD_CMD_WRITE_ZEROES;
  if (flags & C.NBD_CMD_FLAG_FUA && writes) f |= FLAG_FUA;
  if (type === C.NBD_CMD_WRITE_ZEROES && !(flags & C.NBD_CMD_FLAG_NO_HOLE)) f |= FLAG_MAY_TRIM;
  if (flags & C.NBD_CMD_FLAG_REQ_ONE) f |= FLAG_REQ_ONE;
  if (flags & C.NBD_CMD_FLAG_FAST_ZERO) f |= FLAG_FAST_ZERO;
  return f;
}

/**
 * A BLOCK_STATUS payload (extended headers, NBD_CMD_FLAG_PAYLOAD_LEN):
 * its effect length and the meta context ids it names, or null when it is
 * to be refused. "The payload form MUST occupy 8 + n*4 bytes ... 64 bits,
 * effect length; n * 32 bits, list of metacontext ids"; unknown or
 * duplicate ids: "MUST gracefully consume the client's payload before
 * failing with NBD_EINVAL".
 */
export function blockStatusPayload(
  payload: Buffer | null, selected: ReadonlyArray<{ id: number }>,
): { effectLength: number; ids: number[] } | null {
  const p = payload ? T.readBlockStatusPayload(payload, 0, payload.length) : null;
  if (!p || p.ids.length === 0 || new Set(p.ids).size !== p.ids.length) return null;
  const known = new Set(selected.map((m) => m.id));
  return p.ids.every((i) => known.has(i)) ? p : null;
}

/** WRITE, FLUSH, TRIM, WRITE_ZEROES or CACHE down the stack (checkRequest has passed it); `f` is stackFlags'. */
export function callStack(ctx: Context, type: number, payload: Buffer | null, offset: number, count: number, f: number): Promise<unknown> {
  switch (type) {
    case C.NBD_CMD_WRITE:
      return ctx.pwrite(payload!, offset, f);
    case C.NBD_CMD_FLUSH:
      return ctx.flush(f);
    case C.NBD_CMD_TRIM:
      return ctx.trim(count, offset, f);
    case C.NBD_CMD_WRITE_ZEROES:
      return ctx.zero(count, offset, f);
    default: // NBD_CMD_CACHE (checkRequest refused anything else)
      return ctx.cache(count, offset, f);
  }
}
