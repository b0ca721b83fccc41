// null plugin: a bit bucket. Reads return zeros, writes are discarded.

import { NbdError } from "../../backend/types.js";
import type { Plugin, Extent } from "../../backend/types.js";
import { NBD_EINVAL, NBD_ENOSPC } from "../../protocol/constants.js";
import { parseSize } from "../../backend/size.js";

const HOLE_ZERO = 3; // NBD_STATE_HOLE | NBD_STATE_ZERO

export default function createPlugin(): Plugin<true> {
  let size = 0;

  function checkRange(count: number, offset: number, write: boolean): void {
    if (offset < 0 || count < 0 || offset + count > size) {
      const msg = `null: request of ${count} bytes at offset ${offset} beyond end of disk (size ${size})`;
      throw new NbdError(write ? NBD_ENOSPC : NBD_EINVAL, msg);
    }
  }

  return {
    name: "null",
    version: "1.0.0",
    longname: "nbdstate null plugin",
    description: "A bit bucket: reads return zeros, writes are discarded.",
    magicConfigKey: "size",
    configHelp: "size=<SIZE>          Size of the virtual disk (default 0).",

    config(key, value) {
      if (key !== "size") throw new Error(`null: unknown parameter '${key}'`);
      try {
        size = parseSize(value);
      } catch (e) {
        throw new Error(`null: size: ${(e as Error).message}`);
      }
    },

    listExports: () => [{ name: "" }],
    defaultExport: () => "",
    open: () => true,

    getSize: () => size,
    canWrite: () => true,
    canFlush: () => true,
    isRotational: () => false,
    canTrim: () => true,
    canZero: () => true,
    canFastZero: () => true,
    canFua: () => "native",
    canMultiConn: () => true,
    canExtents: () => true,
    canCache: () => "native",

    pread(_h, buf, offset) {
      checkRange(buf.length, offset, false);
      buf.fill(0);
    },
    pwrite(_h, buf, offset) {
      checkRange(buf.length, offset, true);
    },
    flush() {},
    trim(_h, count, offset) {
      checkRange(count, offset, true);
    },
    zero(_h, count, offset) {
      checkRange(count, offset, true);
    },
    extents(_h, count, offset): Extent[] {
      checkRange(count, offset, false);
      return count > 0 ? [{ length: count, type: HOLE_ZERO }] : [];
    },
    cache(_h, count, offset) {
      checkRange(count, offset, false);
    },
  };
}
