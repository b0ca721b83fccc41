// dir= mode of the file plugin: export names are file names inside one
// directory. Every name a client sends is checked here, and opened so that
// no path component can lead out of the directory (src/sys/beneath.ts).

import { closeSync, constants as C, fstatSync, openSync } from "node:fs";
import { opendir, realpath, stat } from "node:fs/promises";
import { join, sep } from "node:path";
import { NbdError } from "../../backend/types.js";
import type { ExportEntry } from "../../backend/types.js";
import { MAX_EXPORTS } from "../../backend/layer.js";
import { NBD_EINVAL } from "../../protocol/constants.js";
import { canOpenBeneath, openBeneath, O_PATH } from "../../sys/beneath.js";
import { FdFile } from "./fd.js";

/** The NBD protocol's limit on export names (bytes). */
export const MAX_NAME_BYTES = 4096;

/** A short, printable rendering of a client-supplied name for messages. */
export function showName(name: string): string {
  const cut = name.length > 64 ? `${name.slice(0, 64)}...` : name;
  return JSON.stringify(cut);
}

/**
 * Why `name` may not be used as an export name in dir mode, or null if it
 * is acceptable syntactically (it may still not exist).
 */
export function nameProblem(name: string): string | null {
  if (name === "") return "dir mode has no default export; the client must choose an export name";
  if (Buffer.byteLength(name, "utf8") > MAX_NAME_BYTES) return `export name longer than ${MAX_NAME_BYTES} bytes`;
  if (name.includes("\0")) return "export name contains a NUL byte";
  if (name.includes("/")) return "export name contains '/'";
  if (name === "." || name.includes("..")) return "export name contains '..' or is '.'";
  return null;
}

/** True if `p` is strictly inside directory `dir` (both canonical). */
function inside(dir: string, p: string): boolean {
  const prefix = dir.endsWith(sep) ? dir : dir + sep;
  return p.startsWith(prefix) && p.length > prefix.length;
}

/** Throw NbdError(EINVAL) unless `name` may be an export name. */
function checkName(name: string): void {
  const problem = nameProblem(name);
  if (problem !== null) throw new NbdError(NBD_EINVAL, `file: ${showName(name)}: ${problem}`);
}

/**
 * Without koffi: resolve an export name with realpath to a path strictly
 * inside `dir`. Racy (a directory swapped for a symlink between this and
 * the open is followed); used only where openBeneath cannot be.
 */
async function resolveByRealpath(dir: string, name: string): Promise<string> {
  let real: string;
  try {
    real = await realpath(join(dir, name));
  } catch {
    throw new NbdError(NBD_EINVAL, `file: export ${showName(name)} does not exist in ${dir}`);
  }
  if (!inside(dir, real)) {
    throw new NbdError(NBD_EINVAL, `file: export ${showName(name)} resolves outside ${dir}`);
  }
  return real;
}

/** Open dir itself (the starting point of openBeneath); the caller closes it. */
function openDir(dir: string): number {
  return openSync(dir, C.O_RDONLY | C.O_DIRECTORY);
}

/** openBeneath, with the refusals a client should understand turned into NbdError(EINVAL). */
function beneath(dirfd: number, dir: string, name: string, flags: number): number {
  try {
    return openBeneath(dirfd, dir, name, flags);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    // A name too long for the file system cannot exist there either.
    if (code === "ENOENT" || code === "ENAMETOOLONG") throw new NbdError(NBD_EINVAL, `file: export ${showName(name)} does not exist in ${dir}`);
    if (code === "EXDEV") throw new NbdError(NBD_EINVAL, `file: export ${showName(name)} resolves outside ${dir}`);
    throw e;
  }
}

/**
 * Open export `name` of `dir` (canonical) with open(2) `flags`. No symlink
 * or ".." can take the open out of `dir`, even one swapped in while it
 * runs. Throws NbdError(NBD_EINVAL) with a clear message for a bad name, a
 * missing file or one outside; other errors (EACCES, EISDIR, ELOOP...) as
 * Node's, with .code.
 */
export async function openExport(dir: string, name: string, flags: number): Promise<FdFile> {
  checkName(name);
  if (!canOpenBeneath()) return FdFile.open(await resolveByRealpath(dir, name), flags | C.O_NOFOLLOW);
  const dirfd = openDir(dir);
  try {
    return new FdFile(beneath(dirfd, dir, name, flags));
  } finally {
    closeSync(dirfd);
  }
}

/** Whether `name` in `dir` is an export: a regular file or block device reached beneath dir. */
async function isExport(dir: string, dirfd: number | null, name: string): Promise<boolean> {
  try {
    if (dirfd === null) {
      const st = await stat(await resolveByRealpath(dir, name));
      return st.isFile() || st.isBlockDevice();
    }
    const fd = openBeneath(dirfd, dir, name, O_PATH);
    try {
      const st = fstatSync(fd);
      return st.isFile() || st.isBlockDevice();
    } finally {
      closeSync(fd);
    }
  } catch {
    return false; // vanished, dangling, outside, or unreadable: not an export
  }
}

/**
 * The exports of `dir`: regular files and block devices, sorted by name.
 * The directory is read entry by entry and at most MAX_EXPORTS exports are
 * kept (a larger directory is an error, as nbdkit's nbdkit_add_export
 * makes it), so a huge directory cannot exhaust memory.
 */
export async function listDir(dir: string): Promise<ExportEntry[]> {
  const out: ExportEntry[] = [];
  const d = await opendir(dir);
  const dirfd = canOpenBeneath() ? openDir(dir) : null;
  try {
    for await (const ent of d) {
      const name = ent.name;
      if (nameProblem(name) !== null) continue;
      if (!(await isExport(dir, dirfd, name))) continue;
      if (out.length >= MAX_EXPORTS) {
        throw new Error(`file: ${dir} holds more than ${MAX_EXPORTS} files: too many exports to list`);
      }
      out.push({ name });
    }
  } finally {
    // for-await closes the directory when the loop ends, however it ends;
    // closing again only fails with ERR_DIR_CLOSED.
    await d.close().catch(() => {});
    if (dirfd !== null) closeSync(dirfd);
  }
  out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return out;
}
