// file plugin: serve a file or block device (file=), or every file in a
// directory chosen by export name (dir=).

import { constants as C, realpathSync, statSync } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { resolve } from "node:path";
import { NbdError, FLAG_FUA, FLAG_MAY_TRIM, FLAG_FAST_ZERO } from "../../backend/types.js";
import type { Plugin, ExportEntry } from "../../backend/types.js";
import { NBD_EINVAL, NBD_ENOTSUP } from "../../protocol/constants.js";
import {
  nativeExtensions, punchHole, readFull, writeFull, writeZeros, readAhead,
  blockDeviceSize, isRotationalDev,
} from "./io.js";
import { resolveExport, listDir, showName } from "./dir.js";

export interface FileHandleState {
  readonly fh: FileHandle;
  readonly path: string;
  readonly exportName: string;
  /** Opened O_RDONLY (asked for, or the file could not be opened read-write). */
  readonly readonly: boolean;
  readonly isBlock: boolean;
  /** Hole punching: undefined = untried, then whether it works on this file. */
  canPunch: boolean | undefined;
}

/** Errors from open(O_RDWR) after which nbdkit retries read-only. */
const RETRY_READONLY = new Set(["EACCES", "EROFS", "EPERM"]);

/** open() errors meaning "this name is not a servable file" in dir mode. */
const NOT_AN_EXPORT = new Set(["EISDIR", "ENOENT", "ENOTDIR", "ELOOP", "ENXIO"]);

/** Resolve a path as nbdkit does at config time (realpath, else absolute). */
function canonical(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    return resolve(p);
  }
}

export default function createPlugin(): Plugin<FileHandleState> {
  let file: string | undefined;
  let dir: string | undefined;

  async function openFile(path: string, exportName: string, readonly: boolean, extra: number): Promise<FileHandleState> {
    let fh: FileHandle | undefined;
    let ro = readonly;
    if (!ro) {
      try {
        fh = await open(path, C.O_RDWR | extra);
      } catch (e) {
        if (!RETRY_READONLY.has((e as NodeJS.ErrnoException).code ?? "")) throw e;
        ro = true;
      }
    }
    fh ??= await open(path, C.O_RDONLY | extra);
    try {
      const st = await fh.stat();
      if (!st.isFile() && !st.isBlockDevice()) {
        throw new NbdError(NBD_EINVAL, `file: ${exportName ? `export ${showName(exportName)}` : path} is not a regular file or block device`);
      }
      return { fh, path, exportName, readonly: ro, isBlock: st.isBlockDevice(), canPunch: undefined };
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  /** Punch a hole if possible, remembering per handle whether it works. */
  async function tryPunch(h: FileHandleState, count: number, offset: number): Promise<boolean> {
    if (h.canPunch === false) return false;
    const ok = await punchHole(h.fh.fd, offset, count);
    if (count > 0) h.canPunch = ok;
    return ok;
  }

  return {
    name: "file",
    version: "1.0.0",
    longname: "nbdstate file plugin",
    description: "Serve a file or block device, or the files in a directory by export name.",
    magicConfigKey: "file",
    configHelp:
      "file=<FILENAME>      The file or block device to serve.\n" +
      "dir=<DIRECTORY>      Serve every regular file in DIRECTORY, chosen by export name.\n" +
      "                     Exactly one of file= or dir= is required.",

    config(key, value) {
      switch (key) {
        case "file":
          if (value === "") throw new Error("file: file parameter must not be empty");
          file = canonical(value);
          return;
        case "dir":
          if (value === "") throw new Error("file: dir parameter must not be empty");
          dir = canonical(value);
          return;
        default:
          throw new Error(`file: unknown parameter '${key}'`);
      }
    },

    configComplete() {
      if (file !== undefined && dir !== undefined) {
        throw new Error("file: file= and dir= cannot be used together");
      }
      if (file === undefined && dir === undefined) {
        throw new Error("file: either file= or dir= parameter is required");
      }
      const path = (file ?? dir)!;
      let st;
      try {
        st = statSync(path);
      } catch (e) {
        const what = file !== undefined ? "file" : "dir";
        throw new Error(`file: ${what}: cannot access '${path}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
      if (file !== undefined && st.isDirectory()) {
        throw new Error(`file: file: '${path}' is a directory (use dir= to serve a directory)`);
      }
      if (dir !== undefined && !st.isDirectory()) {
        throw new Error(`file: dir: '${path}' is not a directory`);
      }
    },

    dumpPlugin() {
      return `file_falloc_fl_punch_hole=${nativeExtensions() !== null ? "yes" : "no"}\n`;
    },

    listExports(): Promise<ExportEntry[]> | ExportEntry[] {
      if (dir !== undefined) return listDir(dir);
      return [{ name: "" }];
    },
    defaultExport() {
      return dir !== undefined ? null : "";
    },

    async open(readonly, exportName) {
      if (dir !== undefined) {
        const path = await resolveExport(dir, exportName);
        // The resolved path has no symlinks left: refuse one swapped in since,
        // and do not block on a FIFO put in its place.
        try {
          return await openFile(path, exportName, readonly, C.O_NOFOLLOW | C.O_NONBLOCK);
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          if (code !== undefined && NOT_AN_EXPORT.has(code)) {
            throw new NbdError(NBD_EINVAL, `file: export ${showName(exportName)} cannot be opened (${code})`);
          }
          throw e;
        }
      }
      return openFile(file!, "", readonly, 0);
    },

    async close(h) {
      await h.fh.close();
    },

    async getSize(h) {
      const st = await h.fh.stat({ bigint: true });
      if (h.isBlock) return blockDeviceSize(st.rdev);
      return Number(st.size);
    },
    canWrite: (h) => !h.readonly,
    canFlush: () => true,
    async isRotational(h) {
      const st = await h.fh.stat({ bigint: true });
      return isRotationalDev(h.isBlock ? st.rdev : st.dev);
    },
    canTrim: () => true,
    canZero: () => true,
    canFastZero: () => true,
    canFua: () => "native",
    canMultiConn: () => true,
    canExtents: () => false,
    canCache: () => "native",

    pread(h, buf, offset) {
      return readFull(h.fh, buf, offset);
    },

    async pwrite(h, buf, offset, flags) {
      await writeFull(h.fh, buf, offset);
      if (flags & FLAG_FUA) await h.fh.datasync();
    },

    async flush(h) {
      await h.fh.datasync();
    },

    async trim(h, count, offset, flags) {
      await tryPunch(h, count, offset); // advisory: a no-op where unsupported
      if (flags & FLAG_FUA) await h.fh.datasync();
    },

    async zero(h, count, offset, flags) {
      if (count === 0) return;
      if (!((flags & FLAG_MAY_TRIM) && (await tryPunch(h, count, offset)))) {
        if (flags & FLAG_FAST_ZERO) {
          throw new NbdError(NBD_ENOTSUP, "file: fast zero is not possible here (would have to write zeros)");
        }
        await writeZeros(h.fh, count, offset);
      }
      if (flags & FLAG_FUA) await h.fh.datasync();
    },

    cache(h, count, offset) {
      return readAhead(h.fh, count, offset);
    },
  };
}
