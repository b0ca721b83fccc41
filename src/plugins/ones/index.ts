// ones plugin: every byte reads as 0xff (or byte=N); writes are discarded.

import type { Plugin, Extent } from "../../backend/types.js";
import { parseSize } from "../../backend/size.js";
import { parseUnsigned } from "../kit/integer.js";

const NBD_STATE_ZERO = 2;

export default function createPlugin(): Plugin<true> {
  let size = 0;
  let byte = 0xff;

  return {
    name: "ones",
    version: "1.0.0",
    longname: "nbdstate ones plugin",
    description: "Every byte reads as 0xff (or byte=N); everything written is discarded.",
    magicConfigKey: "size",
    configHelp:
      "size=<SIZE>          Size of the virtual disk (default 0).\n" +
      "byte=<N>             The byte every read returns (default 0xff).",

    config(key, value) {
      switch (key) {
        case "size":
          try {
            size = parseSize(value);
          } catch (e) {
            throw new Error(`ones: size: ${(e as Error).message}`);
          }
          return;
        case "byte":
          byte = parseUnsigned("ones: byte", value, 255n);
          return;
        default:
          throw new Error(`ones: unknown parameter '${key}'`);
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

    pread(_h, buf) {
      buf.fill(byte);
    },
    pwrite() {},
    flush() {},
    trim() {},
    zero() {},
    extents(_h, count): Extent[] {
      // Allocated data; with byte=0 it also reads as zeros, so say so.
      return [{ length: count, type: byte === 0 ? NBD_STATE_ZERO : 0 }];
    },
    cache() {},
  };
}
