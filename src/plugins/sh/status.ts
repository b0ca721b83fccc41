// Exit statuses and error text: how a script says what happened
// (nbdkit-sh-plugin(3), "Exit codes", as of nbdkit 1.34).

import {
  NBD_EINVAL, NBD_EIO, NBD_ENOMEM, NBD_ENOSPC, NBD_ENOTSUP, NBD_EOVERFLOW, NBD_EPERM, NBD_ESHUTDOWN,
} from "../../protocol/constants.js";
import { NbdError } from "../../backend/types.js";

export const OK = 0;
export const ERROR = 1;
export const MISSING = 2;
export const FALSE = 3;
export const SHUTDOWN_OK = 4;
export const SHUTDOWN_ERR = 5;
export const DISC_FORCE = 6;
export const DISC_SOFT_OK = 7;
export const DISC_SOFT_ERR = 8;
/** Printed by --dump-plugin: statuses above this behave like 1. */
export const MAX_KNOWN_STATUS = DISC_SOFT_ERR;

/**
 * errno names a script may print first on stderr, in nbdkit's order, with
 * the NBD error each becomes (as nbdkit maps errno to the wire: EROFS is
 * EPERM, EDQUOT and EFBIG are ENOSPC).
 */
const ERRNO_NAMES: ReadonlyArray<readonly [string, number]> = [
  ["EPERM", NBD_EPERM],
  ["EIO", NBD_EIO],
  ["ENOMEM", NBD_ENOMEM],
  ["EINVAL", NBD_EINVAL],
  ["ENOSPC", NBD_ENOSPC],
  ["EOVERFLOW", NBD_EOVERFLOW],
  ["ESHUTDOWN", NBD_ESHUTDOWN],
  ["ENOTSUP", NBD_ENOTSUP],
  ["EOPNOTSUPP", NBD_ENOTSUP],
  ["EROFS", NBD_EPERM],
  ["EDQUOT", NBD_ENOSPC],
  ["EFBIG", NBD_ENOSPC],
];

/**
 * The error a failed script reports: "ERRNO message" on stderr (the name in
 * any case, then whitespace or the end), else `fallback` (EIO, or ESHUTDOWN
 * for statuses 5 and 8) with the whole text. Only the first line is kept in
 * the message.
 */
export function scriptError(who: string, stderr: string, fallback: number): NbdError {
  let errno = fallback;
  let skip = 0;
  const head = stderr.slice(0, 10).toUpperCase();
  for (const [name, nbd] of ERRNO_NAMES) {
    if (head.startsWith(name)) {
      errno = nbd;
      skip = name.length;
      break;
    }
  }
  if (skip && skip < stderr.length) {
    if (!/\s/.test(stderr[skip]!)) {
      // "EINVALID" is not EINVAL.
      errno = NBD_EIO;
      skip = 0;
    } else {
      while (skip < stderr.length && /\s/.test(stderr[skip]!)) skip++;
    }
  }
  const text = stderr.replace(/\n+$/, "");
  const line = text.slice(skip).split("\n", 1)[0]!;
  const first = text.split("\n", 1)[0]!;
  const msg = text.length === 0 ? "script exited with error, but did not print an error message on stderr" : line || first;
  return new NbdError(errno, `${who}: ${msg}`);
}
