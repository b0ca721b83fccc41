// ondemand plugin: one persistent filesystem per export name, kept as a
// file of that name in dir=, made with mkfs (or command=) the first time
// the name is asked for. An open filesystem is locked (an OFD lock, the
// same nbdkit takes) so two clients cannot corrupt it.

import { createRequire } from "node:module";
import { randomBytes } from "node:crypto";
import { realpathSync, statSync } from "node:fs";
import { link, opendir, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { FLAG_FUA, NbdError, type ExportEntry, type Plugin, type ServerServices } from "../../backend/types.js";
import { MAX_EXPORTS } from "../../backend/layer.js";
import { parseBool } from "../../backend/size.js";
import { NBD_EINVAL } from "../../protocol/constants.js";
import { makeDisk } from "../kit/mkfs.js";
import { diskRead, diskTrim, diskWrite, openDisk, RecipeConfig, type DiskHandle } from "../kit/made-disk.js";

/** The file that export name "" uses. */
const DEFAULT_NAME = "default";
const NAME_MAX = 255;

interface Locks {
  tryLock(fd: number, options?: { shared?: boolean }): boolean;
}

/** Why `name` cannot be a file name in dir=, or null (nbdkit's rules, plus NUL and control characters). */
export function exportNameProblem(name: string): string | null {
  if (Buffer.byteLength(name, "utf8") > NAME_MAX) return `longer than ${NAME_MAX} bytes`;
  if (/[./:]/.test(name)) return "contains '.', '/' or ':'";
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(name)) return "contains a control character";
  return null;
}

const show = (name: string) => JSON.stringify(name.length > 64 ? `${name.slice(0, 64)}...` : name);

export default function createPlugin(): Plugin<DiskHandle & { name: string }> {
  const cfg = new RecipeConfig("ondemand");
  let dir: string | undefined;
  let wait = false;
  let services: ServerServices | undefined;
  let locks: Locks | undefined;
  /** Names being created right now: later openers wait for the first. */
  const creating = new Map<string, Promise<void>>();

  async function create(name: string): Promise<void> {
    // Made under a hidden name ('.' is never a valid export name) and linked
    // into place only when complete: a failed mkfs leaves no half-made export,
    // and link() never replaces one another process made meanwhile.
    const tmp = join(dir!, `.ondemand-${randomBytes(8).toString("hex")}.tmp`);
    try {
      const out = await makeDisk("ondemand", tmp, cfg.recipe());
      if (out.trim()) services?.debug(`ondemand: ${name}: ${out.trim()}`);
      try {
        await link(tmp, join(dir!, name));
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === "ENOENT") throw new Error("ondemand: the command did not create $disk");
        if (code !== "EEXIST") throw e;
      }
    } finally {
      await rm(tmp, { force: true, recursive: true });
    }
  }

  async function openExisting(name: string, readonly: boolean): Promise<DiskHandle | null> {
    try {
      return await openDisk("ondemand", join(dir!, name), readonly);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw e;
    }
  }

  /** Take the lock, waiting (polling: no thread sits blocked) if wait=true. */
  async function lock(h: DiskHandle, name: string, readonly: boolean): Promise<void> {
    for (let delay = 10; ; delay = Math.min(delay * 2, 200)) {
      if (locks!.tryLock(h.fh.fd, { shared: readonly })) return;
      if (!wait) throw new NbdError(NBD_EINVAL, `ondemand: ${show(name)}: filesystem is locked by another client`);
      await new Promise((r) => setTimeout(r, delay));
    }
  }

  async function openExport(readonly: boolean, exportName: string): Promise<DiskHandle & { name: string }> {
    const name = exportName === "" ? DEFAULT_NAME : exportName;
    const problem = exportNameProblem(name);
    if (problem !== null) throw new NbdError(NBD_EINVAL, `ondemand: invalid export name ${show(name)} rejected: ${problem}`);
    let h = await openExisting(name, readonly);
    if (!h) {
      let pending = creating.get(name);
      if (!pending) {
        pending = create(name).finally(() => creating.delete(name));
        creating.set(name, pending);
      }
      await pending;
      h = await openExisting(name, readonly);
      if (!h) throw new Error(`ondemand: ${show(name)} vanished after it was created`);
    }
    try {
      await lock(h, name, readonly);
    } catch (e) {
      await h.fh.close();
      throw e;
    }
    return { ...h, name };
  }

  return {
    name: "ondemand",
    version: "1.0.0",
    longname: "nbdstate ondemand plugin",
    description: "A persistent filesystem per export name, created on first use.",
    magicConfigKey: "size",
    configHelp:
      "dir=<EXPORTSDIR> (required) Directory containing filesystems.\n" +
      "size=<SIZE>      (required) Virtual filesystem size.\n" +
      "label=<LABEL>               The filesystem label.\n" +
      "type=ext4|...               The filesystem type (default ext4).\n" +
      "wait=true                   Wait instead of rejecting a second client.\n" +
      "command=<COMMAND>           Shell command run instead of mkfs ($disk, $size, $VAR).",

    config(key, value) {
      switch (key) {
        case "dir":
          try {
            dir = realpathSync(value);
          } catch (e) {
            throw new Error(`ondemand: dir: ${value}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
          }
          if (!statSync(dir).isDirectory()) throw new Error(`ondemand: dir: ${value}: not a directory`);
          return;
        case "wait":
          try {
            wait = parseBool(value);
          } catch (e) {
            throw new Error(`ondemand: wait: ${(e as Error).message}`);
          }
          return;
        default:
          cfg.take(key, value);
      }
    },
    configComplete() {
      if (dir === undefined || cfg.size === undefined) throw new Error("ondemand: dir and size parameters are required");
      locks = createRequire(import.meta.url)("fs-native-extensions") as Locks;
    },
    afterFork(s) {
      services = s;
    },

    async listExports(): Promise<ExportEntry[]> {
      const out: ExportEntry[] = [{ name: "" }];
      const names: string[] = [];
      const d = await opendir(dir!);
      try {
        for await (const ent of d) {
          if (ent.name === DEFAULT_NAME || exportNameProblem(ent.name) !== null) continue;
          const st = await stat(join(dir!, ent.name)).catch(() => null);
          if (!st || !(st.isFile() || st.isBlockDevice())) continue;
          if (names.length >= MAX_EXPORTS) throw new Error(`ondemand: ${dir} holds more than ${MAX_EXPORTS} exports: too many to list`);
          names.push(ent.name);
        }
      } finally {
        await d.close().catch(() => {});
      }
      names.sort();
      return out.concat(names.map((name) => ({ name })));
    },
    defaultExport: () => DEFAULT_NAME,

    async open(readonly, exportName) {
      // A failure reaches the client, and the server's log (one line per failed open).
      return openExport(readonly, exportName);
    },
    async close(h) {
      await h.fh.close(); // also drops the lock
    },


    getSize: (h) => h.size,
    canFlush: () => true,
    canTrim: () => true,
    canFua: () => "native",
    // Each export is locked to one client, so multi-conn cannot work (as nbdkit).
    canMultiConn: () => false,

    pread: (h, buf, offset) => diskRead(h, buf, offset),
    async pwrite(h, buf, offset, flags) {
      await diskWrite(h, buf, offset);
      if (flags & FLAG_FUA) await h.fh.datasync();
    },
    async flush(h) {
      await h.fh.datasync();
    },
    async trim(h, count, offset, flags) {
      await diskTrim(h, count, offset);
      if (flags & FLAG_FUA) await h.fh.datasync();
    },
  };
}
