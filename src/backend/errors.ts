import {
  NBD_EINVAL, NBD_EIO, NBD_ENOMEM, NBD_ENOSPC, NBD_ENOTSUP, NBD_EOVERFLOW, NBD_EPERM, NBD_ESHUTDOWN,
} from "../protocol/constants.js";
import { NbdError } from "./types.js";

const BY_CODE: Record<string, number> = {
  EPERM: NBD_EPERM,
  EACCES: NBD_EPERM,
  EROFS: NBD_EPERM,
  EIO: NBD_EIO,
  ENOMEM: NBD_ENOMEM,
  EINVAL: NBD_EINVAL,
  ENOSPC: NBD_ENOSPC,
  EFBIG: NBD_ENOSPC,
  EDQUOT: NBD_ENOSPC,
  EOVERFLOW: NBD_EOVERFLOW,
  ENOTSUP: NBD_ENOTSUP,
  EOPNOTSUPP: NBD_ENOTSUP,
  ESHUTDOWN: NBD_ESHUTDOWN,
};

/** The NBD error number a client should see for an error thrown by a layer. */
export function toNbdErrno(err: unknown): number {
  if (err instanceof NbdError) return err.errno;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === "string" && code in BY_CODE) return BY_CODE[code]!;
  return NBD_EIO;
}

/**
 * The NBD error to send for a failed request, as nbdkit's nbd_errno:
 * "not supported" is ENOTSUP only to a fast zero (the spec's "MUST fail
 * quickly with an error of NBD_ENOTSUP"), else EINVAL; EOVERFLOW only to a
 * read with NBD_CMD_FLAG_DF, else EINVAL.
 */
export function wireErrno(err: unknown, fastZero: boolean, df: boolean): number {
  const n = toNbdErrno(err);
  if (n === NBD_ENOTSUP && !fastZero) return NBD_EINVAL;
  if (n === NBD_EOVERFLOW && !df) return NBD_EINVAL;
  return n;
}

/** Any thrown value as one line of text (for logs and error replies). */
export function errorMessage(e: unknown): string {
  let msg: string;
  if (e instanceof Error) msg = e.message || e.name;
  else if (typeof e === "string") msg = e;
  else {
    try {
      msg = JSON.stringify(e) ?? String(e);
    } catch {
      msg = String(e);
    }
  }
  return msg.replace(/\s*\n\s*/g, " ").trim() || "unknown error";
}
