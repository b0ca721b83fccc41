// linuxdisk plugin: a read-only GPT disk whose one partition is an
// ext2/3/4 filesystem made from a directory by `mke2fs -d` at startup.

import { statSync } from "node:fs";
import { resolve } from "node:path";
import type { Plugin } from "../../backend/types.js";
import { parseSize } from "../../backend/size.js";
import { defaultTypeGuid, MAX_ALIGNMENT, SECTOR, DEFAULT_MBR_ID } from "../kit/partition-table.js";
import { ImageDisk, imageCallbacks } from "../kit/image-disk.js";
import { runTool, tempImage } from "../kit/temp-image.js";

/** `du -c -k -s DIR` in bytes: what the files take now. */
async function du(dir: string): Promise<number> {
  const { stdout } = await runTool("linuxdisk", "du", ["du", "-c", "-k", "-s", dir], { keepStdout: true });
  const last = stdout.trim().split("\n").pop() ?? "";
  const kib = Number(/^(\d+)/.exec(last)?.[1]);
  if (!Number.isSafeInteger(kib)) throw new Error(`linuxdisk: could not parse the output of du: '${last}'`);
  return kib * 1024;
}

export default function createPlugin(): Plugin<true> {
  let dir: string | undefined;
  let label: string | undefined;
  let type = "ext2";
  let size = 0;
  let addEstimate = false;
  let disk: ImageDisk | undefined;

  return {
    name: "linuxdisk",
    version: "1.0.0",
    longname: "nbdstate Linux virtual disk plugin",
    description: "A read-only GPT disk with an ext2/3/4 filesystem made from a directory.",
    magicConfigKey: "dir",
    configHelp:
      "dir=<DIRECTORY>  (required) The directory to serve.\n" +
      "label=<LABEL>               The filesystem label.\n" +
      "type=ext2|ext3|ext4         The filesystem type (default ext2).\n" +
      "size=[+]<SIZE>              The filesystem size (+SIZE: free space to add).",

    config(key, value) {
      switch (key) {
        case "dir":
          if (dir !== undefined) throw new Error("linuxdisk: dir=<DIRECTORY> must only be set once");
          dir = resolve(value);
          return;
        case "label":
          label = value;
          return;
        case "type":
          if (!/^ext[234]$/.test(value)) throw new Error(`linuxdisk: type=${value}: must be ext2, ext3 or ext4`);
          type = value;
          return;
        case "size": {
          addEstimate = value.startsWith("+");
          try {
            size = parseSize(addEstimate ? value.slice(1) : value);
          } catch (e) {
            throw new Error(`linuxdisk: size: ${(e as Error).message}`);
          }
          return;
        }
        default:
          throw new Error(`linuxdisk: unknown parameter '${key}'`);
      }
    },

    configComplete() {
      if (dir === undefined) throw new Error("linuxdisk: you must supply the dir=<DIRECTORY> parameter after the plugin name");
      let st;
      try {
        st = statSync(dir);
      } catch (e) {
        throw new Error(`linuxdisk: dir: ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
      if (!st.isDirectory()) throw new Error(`linuxdisk: dir: ${dir}: not a directory`);
    },

    async getReady() {
      let fsSize = size;
      if (fsSize === 0 || addEstimate) {
        // What the files take, +20% for metadata, at least 1 MiB, +32 MiB of journal for ext3/4 (nbdkit's estimate).
        let estimate = Math.floor(((await du(dir!)) * 6) / 5);
        estimate = Math.max(estimate, 1 << 20);
        if (type !== "ext2") estimate += 32 << 20;
        fsSize = addEstimate ? size + estimate : estimate;
      }
      fsSize = Math.ceil(fsSize / SECTOR) * SECTOR;
      const img = await tempImage("linuxdisk", "linuxdisk");
      try {
        await img.fh.truncate(fsSize);
        const argv = ["mke2fs", "-q", "-F", "-t", type, ...(label !== undefined ? ["-L", label] : []), "-d", dir!, img.path];
        await runTool("linuxdisk", "mke2fs", argv);
        disk = ImageDisk.partitioned(img.fh, fsSize, "gpt", { alignment: MAX_ALIGNMENT, mbrId: DEFAULT_MBR_ID, typeGuid: defaultTypeGuid() }, true);
      } catch (e) {
        await img.fh.close();
        throw e;
      } finally {
        await img.unlink();
      }
    },
    async unload() {
      await disk?.close();
    },

    ...imageCallbacks(() => disk!),
  };
}
