// An example plugin: a RAM disk of size=SIZE bytes (default 1M), shared by
// every client, forgotten when the server exits.
//
//   nbdstate -f -U /tmp/s.sock ./examples/ramdisk.ts size=16M
//   nbdstate --check ./examples/ramdisk.ts        # type-check it (tsc)
//
// A plugin is an object of callbacks (nbdkit's, in camelCase); every one but
// name, open, getSize and pread may be left out. The default export is the
// object, or a factory returning it (called once per server, so two servers
// in one process do not share state).
import { definePlugin, FLAG_FUA, NbdError, NBD_EINVAL, parseSize, type DebugFlags } from "nbdstate";

/** `-D ramdisk.writes=1` sets this before load(): log every write. */
export const debugFlags: DebugFlags = { writes: 0 };

export default definePlugin(() => {
  let size = 1024 * 1024;
  let disk = Buffer.alloc(0);
  let log: (msg: string) => void = () => {};

  return {
    name: "ramdisk",
    version: "1.0.0",
    magicConfigKey: "size", // `ramdisk.ts 16M` means size=16M
    configHelp: "size=<SIZE>  The size of the disk (default 1M).",

    config(key: string, value: string) {
      if (key !== "size") throw new Error(`unknown parameter '${key}'`);
      size = parseSize(value);
    },
    configComplete() {
      disk = Buffer.alloc(size);
    },
    afterFork(server) {
      log = server.debug; // shown with -v
    },

    // The handle returned here is the `h` every other callback gets.
    open(readonly: boolean, exportName: string) {
      if (exportName !== "") throw new NbdError(NBD_EINVAL, `no export '${exportName}' (only "")`);
      return { readonly };
    },
    getSize() {
      return disk.length;
    },
    // Requests arrive already checked against getSize: no range checks needed.
    pread(_h, buf, offset) {
      disk.copy(buf, 0, offset, offset + buf.length);
    },
    pwrite(_h, buf, offset, flags) {
      buf.copy(disk, offset);
      if (debugFlags.writes) log(`ramdisk: write ${buf.length} bytes at ${offset}${flags & FLAG_FUA ? " (FUA)" : ""}`);
    },
    zero(_h, count, offset) {
      disk.fill(0, offset, offset + count);
    },
    canZero: () => true,
    canFua: () => "native" as const, // memory is as durable as it gets
    canMultiConn: () => true, // one buffer: every connection sees every write
  };
});
