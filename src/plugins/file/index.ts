// file plugin: serve a file or block device (file=), or every file in a
// directory chosen by export name (dir=).

import { constants as C, realpathSync, statSync } from "node:fs";
import { resolve } from "node:path";
import { NbdError, FLAG_FUA, FLAG_MAY_TRIM, FLAG_FAST_ZERO, FLAG_REQ_ONE } from "../../backend/types.js";
import type { Plugin, ExportEntry, ServerServices } from "../../backend/types.js";
import { NBD_EINVAL, NBD_ENOTSUP } from "../../protocol/constants.js";
import { errnoName, libcUnavailable, sysError } from "../../sys/libc.js";
import { seekProblem } from "../../sys/seek.js";
import { canFadvise, fadvise, fadviseAsync, FADV } from "../../sys/fadvise.js";
import { nativeExtensions, punchHole, readFull, writeFull, writeZeros, readAhead, blockDeviceSize } from "./io.js";
import { openExport, listDir, showName } from "./dir.js";
import { FdFile, inMemoryFs } from "./fd.js";
import { fileExtents, readSparse } from "./sparse.js";
import type { DataRun } from "../../sys/seek.js";
import { evictWrite, forgetWrites } from "./evict.js";

export interface FileHandleState {
  readonly fh: FdFile;
  readonly path: string;
  readonly exportName: string;
  /** Opened O_RDONLY (asked for, or the file could not be opened read-write). */
  readonly readonly: boolean;
  readonly isBlock: boolean;
  /** SEEK_DATA/SEEK_HOLE answer on this file (never on block devices). */
  readonly canSeek: boolean;
  /** Hole punching: undefined = untried, then whether it works on this file. */
  canPunch: boolean | undefined;
  /** The last data run lseek found (sparse reads inside it skip lseek). */
  readonly dataRun: DataRun;
}

const FADVISE_MODES: Record<string, number> = {
  normal: FADV.NORMAL,
  random: FADV.RANDOM,
  sequential: FADV.SEQUENTIAL,
};

/**
 * The data run last found in each file (by device and inode), shared by
 * every connection of this thread to it: a multi-conn client's
 * connections each found it again with a SEEK_HOLE walk otherwise.
 * Stale runs are harmless (seek.ts's DataRun).
 */
const dataRuns = new Map<string, DataRun>();
const MAX_DATA_RUNS = 1024;
function dataRunOf(dev: number | bigint, ino: number | bigint): DataRun {
  const key = `${dev}:${ino}`;
  let r = dataRuns.get(key);
  if (r === undefined) {
    if (dataRuns.size >= MAX_DATA_RUNS) dataRuns.clear();
    dataRuns.set(key, (r = { start: 0, end: 0 }));
  }
  return r;
}

/** A range may become a hole: the data run over it is forgotten (block status asks the file again). */
function forgetRun(r: DataRun, count: number, offset: number): void {
  if (offset < r.end && offset + count > r.start) r.start = r.end = 0;
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
  let cacheNone = false;
  let fadviseMode: number = FADV.NORMAL;
  let server: ServerServices | undefined;
  /** Debug lines said once per process (why extents or fadvise are off). */
  const said = new Set<string>();
  const debugOnce = (msg: string) => {
    if (said.has(msg)) return;
    said.add(msg);
    server?.debug(msg);
  };

  async function openFile(
    opener: (flags: number) => Promise<FdFile>, path: string, exportName: string, readonly: boolean,
  ): Promise<FileHandleState> {
    let fh: FdFile | undefined;
    let ro = readonly;
    if (!ro) {
      try {
        fh = await opener(C.O_RDWR);
      } catch (e) {
        if (!RETRY_READONLY.has((e as NodeJS.ErrnoException).code ?? "")) throw e;
        ro = true;
      }
    }
    fh ??= await opener(C.O_RDONLY);
    try {
      const st = await fh.stat();
      if (!st.isFile() && !st.isBlockDevice()) {
        throw new NbdError(NBD_EINVAL, `file: ${exportName ? `export ${showName(exportName)}` : path} is not a regular file or block device`);
      }
      const isBlock = st.isBlockDevice();
      // In memory (tmpfs): reads and writes on this thread (fd.ts). Asked
      // of the file= path (dir= exports stay on the thread pool).
      if (!isBlock && exportName === "" && dir === undefined && (await inMemoryFs(path))) {
        fh.sync = true;
        debugOnce(`file: ${path} is in memory (tmpfs): read and written on the serving thread`);
      }
      let canSeek = false;
      if (!isBlock) {
        // Block devices: SEEK_DATA would only call the whole device data.
        const problem = seekProblem(fh.fd, Number(st.size));
        if (problem === null) canSeek = true;
        else debugOnce(`file: extents disabled: ${problem}${libcUnavailable() ? ` (${libcUnavailable()})` : ""}`);
      }
      // A hint: failures are only reported with -v, as nbdkit does.
      if (canFadvise()) {
        const r = fadvise(fh.fd, 0, 0, fadviseMode);
        if (r !== 0) debugOnce(`file: posix_fadvise: ${path}: ${errnoName(r)} (ignored)`);
      } else if (cacheNone || fadviseMode !== FADV.NORMAL) {
        debugOnce(`file: fadvise and cache=none are not supported here (${libcUnavailable()})`);
      }
      return { fh, path, exportName, readonly: ro, isBlock, canSeek, canPunch: undefined, dataRun: dataRunOf(st.dev, st.ino) };
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
      "                     Exactly one of file= or dir= is required.\n" +
      "cache=<MODE>         Set use of caching (default, none).\n" +
      "fadvise=<LEVEL>      Set fadvise hint (normal, random, sequential).",

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
        case "cache":
          if (value === "default") cacheNone = false;
          else if (value === "none") cacheNone = true;
          else throw new Error(`file: unknown cache mode: ${value}`);
          return;
        case "fadvise": {
          const mode = FADVISE_MODES[value];
          if (mode === undefined) throw new Error(`file: unknown fadvise mode: ${value}`);
          fadviseMode = mode;
          return;
        }
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

    afterFork(s) {
      server = s;
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
        const d = dir;
        // Opened beneath dir (no component may lead out of it); O_NONBLOCK:
        // never wait on a FIFO put in a file's place.
        try {
          return await openFile((flags) => openExport(d, exportName, flags | C.O_NONBLOCK), `${d}/${exportName}`, exportName, readonly);
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          if (code !== undefined && NOT_AN_EXPORT.has(code)) {
            throw new NbdError(NBD_EINVAL, `file: export ${showName(exportName)} cannot be opened (${code})`);
          }
          throw e;
        }
      }
      const f = file!;
      return openFile((flags) => FdFile.open(f, flags | C.O_NOCTTY), f, "", readonly);
    },

    async close(h) {
      if (cacheNone) forgetWrites(h.fh.fd);
      await h.fh.close();
    },

    async getSize(h) {
      const st = await h.fh.stat();
      if (h.isBlock) return blockDeviceSize(st.rdev);
      return Number(st.size);
    },
    canWrite: (h) => !h.readonly,
    canFlush: () => true,
    // isRotational: not given, so false, as nbdkit's file plugin (see README).
    canTrim: () => true,
    canZero: () => true,
    canFastZero: () => true,
    canFua: () => "native",
    canMultiConn: () => true,
    canExtents: (h) => h.canSeek,
    canCache: () => "native",

    async pread(h, buf, offset) {
      await readFull(h.fh, buf, offset);
      if (cacheNone) fadvise(h.fh.fd, offset, buf.length, FADV.DONTNEED);
    },

    async preadSparse(h, buf, offset) {
      if (!h.canSeek) {
        await readFull(h.fh, buf, offset);
        if (cacheNone) fadvise(h.fh.fd, offset, buf.length, FADV.DONTNEED);
        return [{ length: buf.length, hole: false }];
      }
      const pieces = await readSparse(h.fh, buf, offset, h.dataRun);
      if (cacheNone) fadvise(h.fh.fd, offset, buf.length, FADV.DONTNEED);
      return pieces;
    },

    extents(h, count, offset, flags) {
      // Only asked where canExtents said yes.
      return fileExtents(h.fh.fd, count, offset, (flags & FLAG_REQ_ONE) !== 0, h.dataRun);
    },

    async pwrite(h, buf, offset, flags) {
      await writeFull(h.fh, buf, offset);
      if (flags & FLAG_FUA) await h.fh.datasync();
      if (cacheNone) await evictWrite(h.fh.fd, offset, buf.length);
    },

    async flush(h) {
      await h.fh.datasync();
    },

    async trim(h, count, offset, flags) {
      forgetRun(h.dataRun, count, offset);
      await tryPunch(h, count, offset); // advisory: a no-op where unsupported
      if (flags & FLAG_FUA) await h.fh.datasync();
    },

    async zero(h, count, offset, flags) {
      if (count === 0) return;
      forgetRun(h.dataRun, count, offset);
      if (!((flags & FLAG_MAY_TRIM) && (await tryPunch(h, count, offset)))) {
        if (flags & FLAG_FAST_ZERO) {
          throw new NbdError(NBD_ENOTSUP, "file: fast zero is not possible here (would have to write zeros)");
        }
        await writeZeros(h.fh, count, offset);
      }
      if (flags & FLAG_FUA) await h.fh.datasync();
    },

    // Every connection opens the file (or the export in dir=) itself, so a
    // worker thread's instance, configured the same, serves the same bytes:
    // the kernel's page cache is what they share.
    threads: { share: () => ({}), join() {} },

    async cache(h, count, offset) {
      // Advisory, as nbdkit: WILLNEED starts reading into the page cache.
      if (!canFadvise()) return readAhead(h.fh, count, offset);
      const r = await fadviseAsync(h.fh.fd, offset, count, FADV.WILLNEED);
      if (r !== 0) throw sysError("posix_fadvise", r);
    },
  };
}
