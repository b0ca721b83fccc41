// The parameters tmpdisk and ondemand share (size=, command=, any VAR=VALUE
// for the command), and the handle over a disk file they made: open it,
// find its size, read, write, punch holes.

import { constants as C } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { NbdError } from "../../backend/types.js";
import { parseSize } from "../../backend/size.js";
import { NBD_EIO } from "../../protocol/constants.js";
import { blockDeviceSize, punchHole, writeFull } from "../file/io.js";
import type { DiskRecipe } from "./mkfs.js";

/** Collects size=, command= and the shell variables from config(). */
export class RecipeConfig {
  size: number | undefined;
  command: string | undefined;
  readonly vars: [string, string][] = [];

  constructor(private readonly who: string) {}

  /** Take one key=value. */
  take(key: string, value: string): void {
    switch (key) {
      case "size":
        try {
          this.size = parseSize(value);
        } catch (e) {
          throw new Error(`${this.who}: size: ${(e as Error).message}`);
        }
        return;
      case "command":
        this.command = value;
        return;
      case "disk":
        throw new Error(`${this.who}: 'disk' parameter cannot be set on the command line (it names the disk for command=)`);
      default:
        if (key === "" || key.includes("=") || key.includes("\0")) throw new Error(`${this.who}: bad parameter name '${key}'`);
        this.vars.push([key, value]);
    }
  }

  recipe(): DiskRecipe {
    if (this.size === undefined) throw new Error(`${this.who}: size parameter is required`);
    return { size: this.size, command: this.command, vars: this.vars };
  }
}

export interface DiskHandle {
  fh: FileHandle;
  size: number;
  /** Hole punching: undefined = untried, then whether it works here. */
  canPunch: boolean | undefined;
}

/** Open a made disk (a regular file or block device, maybe through a symlink). */
export async function openDisk(who: string, path: string, readonly: boolean): Promise<DiskHandle> {
  const fh = await open(path, readonly ? C.O_RDONLY : C.O_RDWR);
  try {
    const st = await fh.stat({ bigint: true });
    let size: number;
    if (st.isBlockDevice()) size = await blockDeviceSize(st.rdev);
    else if (st.isFile()) size = Number(st.size);
    else throw new Error(`${who}: the command did not make a regular file or block device`);
    return { fh, size, canPunch: undefined };
  } catch (e) {
    await fh.close();
    throw e;
  }
}

export async function diskRead(h: DiskHandle, buf: Buffer, offset: number): Promise<void> {
  let pos = 0;
  while (pos < buf.length) {
    const { bytesRead } = await h.fh.read(buf, pos, buf.length - pos, offset + pos);
    if (bytesRead === 0) throw new NbdError(NBD_EIO, "unexpected end of file (the disk shrank)");
    pos += bytesRead;
  }
}

export function diskWrite(h: DiskHandle, buf: Buffer, offset: number): Promise<void> {
  return writeFull(h.fh, buf, offset);
}

/** Trim is advisory: punch a hole where the file system can. */
export async function diskTrim(h: DiskHandle, count: number, offset: number): Promise<void> {
  if (h.canPunch === false || count === 0) return;
  h.canPunch = await punchHole(h.fh.fd, offset, count);
}
