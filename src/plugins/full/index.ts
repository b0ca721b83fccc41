// full plugin: a disk that is always full. Reads return zeros; writes,
// trims and zeroes fail with ENOSPC, as on a thin-provisioned disk whose
// host has run out of space.

import { FLAG_FAST_ZERO, NbdError } from "../../backend/types.js";
import type { Plugin, Extent, ReadPiece } from "../../backend/types.js";
import { NBD_ENOSPC, NBD_ENOTSUP } from "../../protocol/constants.js";
import { parseSize } from "../../backend/size.js";

const HOLE_ZERO = 3; // NBD_STATE_HOLE | NBD_STATE_ZERO

function full(): never {
  throw new NbdError(NBD_ENOSPC, "full: no space left on device");
}

export default function createPlugin(): Plugin<true> {
  let size: number | undefined;

  return {
    name: "full",
    version: "1.0.0",
    longname: "nbdstate full plugin",
    description: "A disk that is always full: reads return zeros, writes fail with ENOSPC.",
    magicConfigKey: "size",
    configHelp: "size=<SIZE>          (required) Size of the virtual disk.",

    config(key, value) {
      if (key !== "size") throw new Error(`full: unknown parameter '${key}'`);
      try {
        size = parseSize(value);
      } catch (e) {
        throw new Error(`full: size: ${(e as Error).message}`);
      }
    },
    configComplete() {
      if (size === undefined) throw new Error("full: size parameter is required");
    },

    listExports: () => [{ name: "" }],
    defaultExport: () => "",
    open: () => true,

    getSize: () => size!,
    canWrite: () => true,
    canFlush: () => false,
    isRotational: () => false,
    canTrim: () => true,
    canZero: () => true,
    // As nbdkit: a fast zero is refused at once (ENOTSUP), a plain one
    // fails like a write.
    canFastZero: () => true,
    canFua: () => "none",
    canMultiConn: () => true,
    canExtents: () => true,
    canCache: () => "native",

    pread(_h, buf) {
      buf.fill(0);
    },
    preadSparse(_h, buf): ReadPiece[] {
      return [{ length: buf.length, hole: true }];
    },
    pwrite: full,
    trim: full,
    zero(_h, _count, _offset, flags) {
      if (flags & FLAG_FAST_ZERO) throw new NbdError(NBD_ENOTSUP, "full: fast zero is not supported");
      full();
    },
    extents(_h, count): Extent[] {
      return [{ length: count, type: HOLE_ZERO }];
    },
    cache() {},
  };
}
