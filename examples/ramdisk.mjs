// The ramdisk example (see ramdisk.ts) in plain JavaScript: no build, no
// types. The JSDoc annotation lets `nbdstate --check ./ramdisk.mjs` and
// editors check it against the package's types all the same.
//
//   nbdstate -f -U /tmp/s.sock ./examples/ramdisk.mjs size=16M
import { NbdError, NBD_EINVAL, parseSize } from "nbdstate";

/** @returns {import("nbdstate").Plugin<{ readonly: boolean }>} */
export default function createPlugin() {
  let size = 1024 * 1024;
  let disk = Buffer.alloc(0);

  return {
    name: "ramdisk",
    version: "1.0.0",
    magicConfigKey: "size",
    configHelp: "size=<SIZE>  The size of the disk (default 1M).",

    config(key, value) {
      if (key !== "size") throw new Error(`unknown parameter '${key}'`);
      size = parseSize(value);
    },
    configComplete() {
      disk = Buffer.alloc(size);
    },
    open(readonly, exportName) {
      if (exportName !== "") throw new NbdError(NBD_EINVAL, `no export '${exportName}' (only "")`);
      return { readonly };
    },
    getSize() {
      return disk.length;
    },
    pread(_h, buf, offset) {
      disk.copy(buf, 0, offset, offset + buf.length);
    },
    pwrite(_h, buf, offset) {
      buf.copy(disk, offset);
    },
    zero(_h, count, offset) {
      disk.fill(0, offset, offset + count);
    },
    canZero: () => true,
    canMultiConn: () => true,
  };
}
