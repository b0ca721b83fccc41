// dir= mode of the file plugin: export names are file names inside one
// directory. Every name a client sends is checked here before any open.

import { opendir, realpath, stat } from "node:fs/promises";
import { join, sep } from "node:path";
import { NbdError } from "../../backend/types.js";
import type { ExportEntry } from "../../backend/types.js";
import { MAX_EXPORTS } from "../../backend/layer.js";
import { NBD_EINVAL } from "../../protocol/constants.js";

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

/**
 * Resolve an export name to the canonical path of a regular file or block
 * device directly inside (or, through symlinks, still inside) `dir`.
 * Throws NbdError(NBD_EINVAL) with a clear message otherwise.
 */
export async function resolveExport(dir: string, name: string): Promise<string> {
  const problem = nameProblem(name);
  if (problem !== null) throw new NbdError(NBD_EINVAL, `file: ${showName(name)}: ${problem}`);
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

/**
 * The exports of `dir`: regular files and block devices, sorted by name.
 * The directory is read entry by entry and at most MAX_EXPORTS exports are
 * kept (a larger directory is an error, as nbdkit's nbdkit_add_export
 * makes it), so a huge directory cannot exhaust memory.
 */
export async function listDir(dir: string): Promise<ExportEntry[]> {
  const out: ExportEntry[] = [];
  const d = await opendir(dir);
  try {
    for await (const ent of d) {
      const name = ent.name;
      if (nameProblem(name) !== null) continue;
      try {
        const real = await realpath(join(dir, name));
        if (!inside(dir, real)) continue;
        const st = await stat(real);
        if (!st.isFile() && !st.isBlockDevice()) continue;
      } catch {
        continue; // vanished or dangling symlink: not an export
      }
      if (out.length >= MAX_EXPORTS) {
        throw new Error(`file: ${dir} holds more than ${MAX_EXPORTS} files: too many exports to list`);
      }
      out.push({ name });
    }
  } finally {
    // for-await closes the directory when the loop ends, however it ends;
    // closing again only fails with ERR_DIR_CLOSED.
    await d.close().catch(() => {});
  }
  out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return out;
}
