// random plugin: a disk of pseudo-random bytes, the same for a given seed
// at every offset. A write succeeds if it writes exactly what is there
// (so `nbdcopy $uri $uri` checks a copy), and fails with EIO otherwise.
// The bytes are nbdstate's own (see README.md): they differ from nbdkit's
// for the same seed.

import { randomInt } from "node:crypto";
import { NbdError } from "../../backend/types.js";
import type { Plugin } from "../../backend/types.js";
import { NBD_EIO } from "../../protocol/constants.js";
import { parseSize } from "../../backend/size.js";
import { parseUnsigned } from "../kit/integer.js";
import { fillRandom, streamKey } from "../kit/hash-random.js";

/** Stream constant of the random plugin (sparse-random uses others). */
const STREAM = 0x52414e44; // "RAND"

export interface RandomPlugin extends Plugin<true> {
  /** The seed in use (chosen at random when seed= is not given). */
  readonly seed: number;
}

export default function createPlugin(): RandomPlugin {
  let size: number | undefined;
  let seed = randomInt(0x1_0000_0000);
  let key = 0;

  return {
    name: "random",
    version: "1.0.0",
    longname: "nbdstate random plugin",
    description: "Pseudo-random bytes, repeatable with seed=; writes must match what is there.",
    magicConfigKey: "size",
    configHelp:
      "size=<SIZE>          (required) Size of the virtual disk.\n" +
      "seed=<SEED>          Random seed, 0..4294967295 (default: chosen at random).",
    get seed() {
      return seed;
    },

    config(key_, value) {
      switch (key_) {
        case "size":
          try {
            size = parseSize(value);
          } catch (e) {
            throw new Error(`random: size: ${(e as Error).message}`);
          }
          return;
        case "seed":
          seed = parseUnsigned("random: seed", value, 0xffffffffn);
          return;
        default:
          throw new Error(`random: unknown parameter '${key_}'`);
      }
    },
    configComplete() {
      if (size === undefined) throw new Error("random: size parameter is required");
      key = streamKey(seed, STREAM);
    },
    afterFork(server) {
      server.debug(`random: seed=${seed}`);
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
    canFastZero: () => false,
    canFua: () => "none",
    canMultiConn: () => true,
    canExtents: () => false,
    canCache: () => "native",

    pread(_h, buf, offset) {
      fillRandom(buf, offset, key);
    },
    pwrite(_h, buf, offset) {
      const expected = Buffer.allocUnsafe(buf.length);
      fillRandom(expected, offset, key);
      if (!expected.equals(buf)) throw new NbdError(NBD_EIO, "random: data written does not match expected");
    },
    // Nothing on a random disk reads as zeros: trimming or zeroing it
    // cannot leave it as it is.
    trim() {
      throw new NbdError(NBD_EIO, "random: attempt to trim or zero non-sparse random disk");
    },
    zero() {
      throw new NbdError(NBD_EIO, "random: attempt to trim or zero non-sparse random disk");
    },
    cache() {},
  };
}
