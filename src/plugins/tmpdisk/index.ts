// tmpdisk plugin: each connection gets a fresh filesystem made by mkfs
// (or command=) in a private temporary directory; the file is unlinked as
// soon as it is open, so it disappears when the connection closes.

import { mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Plugin, ServerServices } from "../../backend/types.js";
import { makeDisk } from "../kit/mkfs.js";
import { largeTmpdir } from "../kit/temp-image.js";
import { diskRead, diskTrim, diskWrite, openDisk, RecipeConfig, type DiskHandle } from "../kit/made-disk.js";

export default function createPlugin(): Plugin<DiskHandle> {
  const cfg = new RecipeConfig("tmpdisk");
  let services: ServerServices | undefined;

  async function makeAndOpen(readonly: boolean): Promise<DiskHandle> {
    // A private directory: nobody else can swap the file between mkfs and open.
    const dir = await mkdtemp(join(largeTmpdir(), "tmpdisk"));
    try {
      const disk = join(dir, "disk");
      const out = await makeDisk("tmpdisk", disk, cfg.recipe());
      if (out.trim()) services?.debug(`tmpdisk: ${out.trim()}`);
      try {
        return await openDisk("tmpdisk", disk, readonly);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "ENOENT") throw new Error("tmpdisk: the command did not create $disk");
        throw e;
      }
    } finally {
      // The open descriptor keeps the disk alive; its name goes now.
      await rm(dir, { recursive: true, force: true });
    }
  }

  return {
    name: "tmpdisk",
    version: "1.0.0",
    longname: "nbdstate tmpdisk plugin",
    description: "A fresh temporary filesystem for each client, deleted when it disconnects.",
    magicConfigKey: "size",
    configHelp:
      "size=<SIZE>      (required) Virtual filesystem size.\n" +
      "label=<LABEL>               The filesystem label.\n" +
      "type=ext4|...               The filesystem type (default ext4).\n" +
      "command=<COMMAND>           Shell command run instead of mkfs ($disk, $size, $VAR).\n" +
      "VAR=VALUE                   Any other parameter becomes $VAR for command=.",

    config(key, value) {
      cfg.take(key, value);
    },
    configComplete() {
      cfg.recipe();
    },
    afterFork(s) {
      services = s;
    },

    async open(readonly) {
      // A failing mkfs reaches the client, and the server's log (one line per failed open).
      return makeAndOpen(readonly);
    },
    async close(h) {
      await h.fh.close();
    },

    getSize: (h) => h.size,
    canFlush: () => true,
    canTrim: () => true,
    // Temporary disks need no durability: FUA and flush are accepted and ignored, as nbdkit.
    canFua: () => "native",
    canMultiConn: () => false,

    pread: (h, buf, offset) => diskRead(h, buf, offset),
    pwrite: (h, buf, offset) => diskWrite(h, buf, offset),
    flush() {},
    trim: (h, count, offset) => diskTrim(h, count, offset),
  };
}
