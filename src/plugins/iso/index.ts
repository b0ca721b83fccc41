// iso plugin: a read-only ISO 9660 image of one or more directories, made
// at startup by xorriso (as mkisofs), genisoimage or mkisofs into a
// temporary file. params= is split into words like a shell would, but no
// shell runs: operators, globs and $variables are refused.

import { realpathSync, statSync } from "node:fs";
import { basename, delimiter, join } from "node:path";
import { accessSync, constants } from "node:fs";
import parse from "shell-quote/parse.js";
import type { Plugin } from "../../backend/types.js";
import { ImageDisk, imageCallbacks } from "../kit/image-disk.js";
import { runTool, tempImage } from "../kit/temp-image.js";

const PROGS = ["xorriso", "genisoimage", "mkisofs"];

function onPath(prog: string): boolean {
  for (const d of (process.env.PATH ?? "/usr/bin:/bin").split(delimiter).filter(Boolean)) {
    try {
      accessSync(join(d, prog), constants.X_OK);
      return true;
    } catch {
      // next
    }
  }
  return false;
}

/** params= as argument words. */
export function splitParams(params: string): string[] {
  const words: string[] = [];
  const tokens = parse(params, (name: string) => {
    throw new Error(`iso: params: $${name}: variables are not expanded (no shell runs); write the value itself`);
  });
  for (const t of tokens) {
    if (typeof t === "string") words.push(t);
    else if ("comment" in t) break;
    else if (t.op === "glob") words.push(t.pattern); // a word with * or ?: passed as it is, not expanded
    else throw new Error(`iso: params: '${t.op}' is not supported (no shell runs); quote it to pass it as a word`);
  }
  return words;
}

export default function createPlugin(): Plugin<true> {
  const dirs: string[] = [];
  let params: string[] = [];
  let prog: string | undefined;
  let disk: ImageDisk | undefined;

  return {
    name: "iso",
    version: "1.0.0",
    longname: "nbdstate iso plugin",
    description: "A read-only ISO 9660 image made from directories.",
    magicConfigKey: "dir",
    configHelp:
      "dir=<DIRECTORY>     (required) A directory to put in the ISO (repeat to merge several).\n" +
      "params='<PARAMS>'              Extra parameters for the ISO program (e.g. -JrT -V \"My Disk\").\n" +
      "prog=<ISOPROG>                 The program making the ISO (default xorriso, genisoimage or mkisofs).",

    config(key, value) {
      switch (key) {
        case "dir": {
          let d: string;
          try {
            d = realpathSync(value);
          } catch (e) {
            throw new Error(`iso: dir: ${value}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
          }
          if (!statSync(d).isDirectory()) throw new Error(`iso: dir: ${value}: not a directory`);
          dirs.push(d);
          return;
        }
        case "params":
          params = splitParams(value);
          return;
        case "prog":
          if (value === "") throw new Error("iso: prog must not be empty");
          prog = value;
          return;
        default:
          throw new Error(`iso: unknown parameter '${key}'`);
      }
    },

    configComplete() {
      if (dirs.length === 0) throw new Error("iso: you must supply the dir=<DIRECTORY> parameter after the plugin name");
      prog ??= PROGS.find(onPath);
      if (prog === undefined) throw new Error("iso: none of xorriso, genisoimage or mkisofs is installed (or use prog=)");
    },

    dumpPlugin() {
      return `iso_prog=${PROGS.find(onPath) ?? ""}\n`;
    },

    async getReady() {
      const img = await tempImage("iso", "iso");
      try {
        // xorriso speaks mkisofs's language only when asked to.
        const as = basename(prog!).startsWith("xorriso") ? ["-as", "mkisofs"] : [];
        await runTool("iso", prog!, [prog!, ...as, "-quiet", ...params, ...dirs], { stdoutFd: img.fh.fd });
        const { size } = await img.fh.stat();
        if (size === 0) throw new Error(`iso: ${prog} wrote no image`);
        disk = ImageDisk.bare(img.fh, size);
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
