// floppy plugin: a read-only disk with an MBR and one FAT partition holding
// a directory's files. The FAT image is made for real at startup, with
// mkfs.fat and mtools (mmd, mcopy), in a temporary file.

import { lstat, readdir } from "node:fs/promises";
import { statSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Plugin } from "../../backend/types.js";
import { parseSize } from "../../backend/size.js";
import { ImageDisk, imageCallbacks } from "../kit/image-disk.js";
import { defaultTypeGuid, MAX_ALIGNMENT, SECTOR } from "../kit/partition-table.js";
import { runTool, sbinPath, tempImage, type TempImage } from "../kit/temp-image.js";

const DEFAULT_LABEL = "NBDKITFLOPY";
const CLUSTER = 4096;

interface Tree {
  /** Directories below the root, parents first (relative paths, '/'-separated). */
  dirs: string[];
  /** Regular files by directory ("" = root). */
  files: Map<string, string[]>;
  /** A generous estimate of the bytes the filesystem needs. */
  bytes: number;
}

/** Walk `root`: directories and regular files (anything else is skipped, as nbdkit does). */
async function walk(root: string): Promise<Tree> {
  const tree: Tree = { dirs: [], files: new Map([["", []]]), bytes: 0 };
  const visit = async (rel: string) => {
    const abs = rel === "" ? root : join(root, rel);
    const names = (await readdir(abs)).sort();
    // Directory entries: 32 bytes each, plus one more per 13 characters of long name.
    let entries = 2;
    for (const name of names) {
      const st = await lstat(join(abs, name));
      const child = rel === "" ? name : `${rel}/${name}`;
      if (st.isDirectory()) {
        tree.dirs.push(child);
        tree.files.set(child, []);
        entries += 1 + Math.ceil(name.length / 13);
        await visit(child);
      } else if (st.isFile()) {
        if (st.size > 0xffffffff) throw new Error(`floppy: ${join(abs, name)}: larger than FAT allows (4 GiB - 1)`);
        tree.files.get(rel)!.push(name);
        entries += 1 + Math.ceil(name.length / 13);
        tree.bytes += Math.ceil(st.size / CLUSTER) * CLUSTER;
      }
    }
    tree.bytes += Math.ceil((entries * 32) / CLUSTER) * CLUSTER;
  };
  await visit("");
  return tree;
}

/** The MBR type byte for the FAT the boot sector says mkfs.fat made. */
function fatPartitionType(boot: Buffer): number {
  if (boot.toString("latin1", 0x52, 0x57) === "FAT32") return 0x0c; // FAT32, LBA
  if (boot.toString("latin1", 0x36, 0x3b) === "FAT16") return 0x0e; // FAT16, LBA
  return 0x01; // FAT12
}

export default function createPlugin(): Plugin<true> {
  let dir: string | undefined;
  let label = DEFAULT_LABEL;
  let size = 0;
  let disk: ImageDisk | undefined;

  /** Format `img` (`bytes` long) and copy the tree in; false if it did not fit. */
  async function build(img: TempImage, bytes: number, tree: Tree): Promise<boolean> {
    await img.fh.truncate(0);
    await img.fh.truncate(bytes);
    const env = { ...process.env, PATH: sbinPath(), MTOOLS_SKIP_CHECK: "1" };
    await runTool("floppy", "mkfs.fat", ["mkfs.fat", "-n", label, img.path], { env });
    const target = (rel: string) => `::/${rel}`;
    try {
      if (tree.dirs.length > 0) await runTool("floppy", "mmd", ["mmd", "-i", img.path, ...tree.dirs.map(target)], { env });
      for (const [rel, names] of tree.files) {
        if (names.length === 0) continue;
        const from = names.map((n) => join(dir!, ...rel.split("/").filter(Boolean), n));
        // -p, -m: keep attributes and times; -Q: stop at the first error; -D o: no prompt on a name clash.
        await runTool("floppy", "mcopy", ["mcopy", "-i", img.path, "-p", "-m", "-Q", "-D", "o", ...from, `${target(rel)}${rel ? "/" : ""}`], { env });
      }
    } catch (e) {
      if (/full/i.test((e as Error).message)) return false;
      throw e;
    }
    return true;
  }

  return {
    name: "floppy",
    version: "1.0.0",
    longname: "nbdstate floppy plugin",
    description: "A read-only FAT disk (MBR, one partition) holding a directory's files.",
    magicConfigKey: "dir",
    configHelp:
      "dir=<DIRECTORY>     (required) The directory to serve.\n" +
      "label=<LABEL>                  The volume label (default NBDKITFLOPY).\n" +
      "size=<SIZE>                    Total disk size (default: just big enough).",

    config(key, value) {
      switch (key) {
        case "dir":
          if (dir !== undefined) throw new Error("floppy: dir=<DIRECTORY> must only be set once");
          dir = resolve(value);
          return;
        case "label":
          // The FAT volume label: 11 bytes, ASCII, no characters DOS forbids.
          if (!/^[\x20-\x7e]{1,11}$/.test(value) || /["*+,./:;<=>?[\\\]|]/.test(value)) {
            throw new Error(`floppy: label '${value}': must be 1 to 11 ASCII characters, none of "*+,./:;<=>?[\\]|`);
          }
          label = value;
          return;
        case "size":
          try {
            size = parseSize(value);
          } catch (e) {
            throw new Error(`floppy: size: ${(e as Error).message}`);
          }
          return;
        default:
          throw new Error(`floppy: unknown parameter '${key}'`);
      }
    },

    configComplete() {
      if (dir === undefined) throw new Error("floppy: you must supply the dir=<DIRECTORY> parameter after the plugin name");
      let st;
      try {
        st = statSync(dir);
      } catch (e) {
        throw new Error(`floppy: dir: ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
      if (!st.isDirectory()) throw new Error(`floppy: dir: ${dir}: not a directory`);
      if (size !== 0 && size < MAX_ALIGNMENT + 64 * 1024) {
        throw new Error(`floppy: size ${size} is too small (the partition starts at 1 MiB)`);
      }
    },

    async getReady() {
      const tree = await walk(dir!);
      const img = await tempImage("floppy", "floppy");
      try {
        let bytes: number;
        if (size > 0) {
          // size= is the whole disk: the partition fills what follows the first 1 MiB.
          bytes = Math.floor((size - MAX_ALIGNMENT) / SECTOR) * SECTOR;
          if (!(await build(img, bytes, tree))) throw new Error(`floppy: the files in ${dir} do not fit in size=${size}`);
        } else {
          // Just big enough: the estimate plus FAT tables and slack, grown until it fits.
          bytes = Math.ceil((tree.bytes * 1.1 + 256 * 1024) / CLUSTER) * CLUSTER;
          for (let tries = 0; !(await build(img, bytes, tree)); tries++) {
            if (tries >= 8) throw new Error(`floppy: could not make the files in ${dir} fit`);
            bytes = Math.ceil((bytes * 1.5) / CLUSTER) * CLUSTER;
          }
        }
        const boot = Buffer.alloc(SECTOR);
        await img.fh.read(boot, 0, SECTOR, 0);
        disk = ImageDisk.partitioned(img.fh, bytes, "mbr", { alignment: MAX_ALIGNMENT, mbrId: fatPartitionType(boot), typeGuid: defaultTypeGuid() }, false);
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
