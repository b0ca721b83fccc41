// What a client learns about an export at NBD_OPT_GO / EXPORT_NAME:
// size, transmission flags derived from the top layer's capabilities,
// canonical name, description and block size constraints.

import * as C from "../protocol/constants.js";
import type { Context } from "../backend/types.js";

export interface ExportInfo {
  name: string;
  size: number;
  flags: number;
  description: string | null;
  /** Constraints a layer reported (NBD_INFO_BLOCK_SIZE is sent only then, as nbdkit). */
  blockSize: { minimum: number; preferred: number; maximum: number } | null;
  canWrite: boolean;
  canFua: boolean;
}

export async function transmissionFlags(ctx: Context, name: string): Promise<ExportInfo> {
  const [size, canWrite, canFlush, rotational, canTrim, canZero, canFastZero, fua, multiConn, cache, bs, description] =
    await Promise.all([
      ctx.getSize(), ctx.canWrite(), ctx.canFlush(), ctx.isRotational(), ctx.canTrim(), ctx.canZero(),
      ctx.canFastZero(), ctx.canFua(), ctx.canMultiConn(), ctx.canCache(), ctx.blockSize(), ctx.exportDescription(),
    ]);
  // NBD_FLAG_SEND_DF and NBD_FLAG_BLOCK_STATUS_PAYLOAD depend on what was negotiated: the GO record adds them.
  let flags = C.NBD_FLAG_HAS_FLAGS;
  if (!canWrite) flags |= C.NBD_FLAG_READ_ONLY;
  if (canFlush) flags |= C.NBD_FLAG_SEND_FLUSH;
  const canFua = canWrite && fua !== "none";
  if (canFua) flags |= C.NBD_FLAG_SEND_FUA;
  if (rotational) flags |= C.NBD_FLAG_ROTATIONAL;
  if (canWrite && canTrim) flags |= C.NBD_FLAG_SEND_TRIM;
  if (canWrite && canZero) {
    flags |= C.NBD_FLAG_SEND_WRITE_ZEROES;
    if (canFastZero) flags |= C.NBD_FLAG_SEND_FAST_ZERO;
  }
  if (multiConn) flags |= C.NBD_FLAG_CAN_MULTI_CONN;
  if (cache !== "none") flags |= C.NBD_FLAG_SEND_CACHE;
  return {
    name,
    size,
    flags,
    description,
    blockSize: bs ?? null,
    canWrite,
    canFua,
  };
}
