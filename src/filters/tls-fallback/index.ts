// tls-fallback filter: plaintext clients of a server that allows but does
// not require TLS (--tls=on) get a small read-only disk holding a readme,
// whatever export they ask for; the layer below is not even opened for
// them (nbdkit-tls-fallback-filter). TLS clients pass straight through:
// the filter has no data callbacks, so they pay nothing for it.

import type { BlockSize, CacheMode, Context, Extent, Filter, FuaMode, ReadPiece } from "../../backend/types.js";
import { NbdError } from "../../backend/types.js";
import { NBD_EINVAL, NBD_EPERM } from "../../protocol/constants.js";

/** The readme disk's size: the message, cut or padded with NULs to this. */
export const README_SIZE = 512;
const DEFAULT_MESSAGE = "This NBD server requires TLS authentication before it will serve useful data.\n";

export default function createFilter(): Filter {
  let message = Buffer.from(DEFAULT_MESSAGE);

  return {
    name: "tls-fallback",
    version: "1.0.0",
    longname: "nbdstate tls-fallback filter",
    description: "Serve a readme to plaintext clients instead of the plugin's data.",
    configHelp: "tlsreadme=<MESSAGE>  Alternative contents for the plaintext dummy export.",

    config(next, key, value) {
      if (key !== "tlsreadme") return next(key, value);
      message = Buffer.from(value, "utf8");
    },

    // Plaintext clients see one export, the default "".
    listExports(lower, p) {
      return p.tls ? lower.listExports(p) : [{ name: "" }];
    },
    defaultExport(lower, p) {
      return p.tls ? lower.defaultExport(p) : "";
    },

    open(a) {
      // Not next(): a plaintext client must not make the plugin do any
      // work (nbdkit's CVE-2019-14850 reasoning).
      if (!a.tls) a.use(readmeDisk(message, a.exportName));
    },
  };
}

/** A context that is the readme: read-only, README_SIZE bytes, no other features. */
export function readmeDisk(message: Buffer, exportName: string): Context {
  const disk = Buffer.alloc(README_SIZE);
  message.copy(disk, 0, 0, Math.min(message.length, README_SIZE));
  const no = async () => false;
  const refuse = async () => {
    throw new NbdError(NBD_EPERM, "tls-fallback: the plaintext export is read-only");
  };
  return {
    exportName,
    readonly: true,
    getSize: async () => README_SIZE,
    canWrite: no,
    canFlush: no,
    isRotational: no,
    canTrim: no,
    canZero: no,
    canFastZero: no,
    canFua: async (): Promise<FuaMode> => "none",
    canMultiConn: no,
    canExtents: no,
    canCache: async (): Promise<CacheMode> => "none",
    blockSize: async (): Promise<BlockSize | null> => null,
    exportDescription: async () => null,
    pread: async (buf, offset) => void disk.copy(buf, 0, offset, offset + buf.length),
    preadSparse: async (buf, offset): Promise<ReadPiece[]> => {
      disk.copy(buf, 0, offset, offset + buf.length);
      return [{ length: buf.length, hole: false }];
    },
    pwrite: refuse,
    flush: async () => {},
    trim: refuse,
    zero: refuse,
    extents: async (count): Promise<Extent[]> => [{ length: count, type: 0 }],
    contextExtents: async (context) => {
      throw new NbdError(NBD_EINVAL, `tls-fallback: no metadata context ${context} on the plaintext export`);
    },
    cache: refuse,
  };
}
