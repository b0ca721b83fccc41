// Opening the regular files that back split and partitioning disks, and
// exact positional reads (a file that shrank under us is an error, not zeros).

import { constants as C } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { NbdError } from "../../backend/types.js";
import { NBD_EIO } from "../../protocol/constants.js";

export interface BackingFile {
  readonly path: string;
  readonly fh: FileHandle;
  readonly size: number;
  /** Opened read-only (asked for, or the file could not be opened for writing). */
  readonly readonly: boolean;
}

/** Errors from open(O_RDWR) after which a read-only open is tried. */
const RETRY_READONLY = new Set(["EACCES", "EROFS", "EPERM", "ETXTBSY"]);

const code = (e: unknown) => (e as NodeJS.ErrnoException).code ?? (e as Error).message;

/** Open a regular file read-write (or read-only); errors name the file and plugin. */
export async function openBackingFile(who: string, path: string, readonly: boolean): Promise<BackingFile> {
  let fh: FileHandle | undefined;
  let ro = readonly;
  try {
    if (!ro) {
      try {
        fh = await open(path, C.O_RDWR);
      } catch (e) {
        if (!RETRY_READONLY.has(code(e))) throw e;
        ro = true;
      }
    }
    fh ??= await open(path, C.O_RDONLY);
  } catch (e) {
    throw new Error(`${who}: ${path}: cannot open: ${code(e)}`);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new Error(`${who}: ${path}: not a regular file`);
    return { path, fh, size: st.size, readonly: ro };
  } catch (e) {
    await fh.close();
    throw e;
  }
}

/** Read exactly buf.length bytes at offset. */
export async function readExact(f: BackingFile, buf: Buffer, offset: number): Promise<void> {
  let pos = 0;
  while (pos < buf.length) {
    const { bytesRead } = await f.fh.read(buf, pos, buf.length - pos, offset + pos);
    if (bytesRead === 0) throw new NbdError(NBD_EIO, `${f.path}: unexpected end of file (was it truncated?)`);
    pos += bytesRead;
  }
}
