// split plugin: several files concatenated into one disk. A request is cut
// at file boundaries and each piece goes to its file at the offset WITHIN
// that file (nbdkit's split writes at the disk offset instead: a bug).

import { statSync } from "node:fs";
import { resolve } from "node:path";
import type { Plugin } from "../../backend/types.js";
import { openBackingFile, readExact, type BackingFile } from "../kit/files.js";
import { writeFull, readAhead } from "../file/io.js";

interface Piece {
  file: BackingFile;
  /** Where this file starts on the disk. */
  start: number;
}

export interface SplitHandle {
  /** Every file, in order (closed on close). */
  files: BackingFile[];
  /** The non-empty files with their disk offsets, for lookup. */
  pieces: Piece[];
  size: number;
  readonly: boolean;
}

/** Index in `pieces` of the file holding disk offset `offset`. */
function find(pieces: readonly Piece[], offset: number): number {
  let lo = 0;
  let hi = pieces.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (pieces[mid]!.start <= offset) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** Call `op` for each file piece of [offset, offset + count): (file, offset in file, position in request, length). */
async function eachFile(
  h: SplitHandle, count: number, offset: number,
  op: (f: BackingFile, at: number, pos: number, n: number) => Promise<void>,
): Promise<void> {
  let i = find(h.pieces, offset);
  let pos = 0;
  while (pos < count) {
    const p = h.pieces[i++]!;
    const at = offset + pos - p.start;
    const n = Math.min(p.file.size - at, count - pos);
    await op(p.file, at, pos, n);
    pos += n;
  }
}

export default function createPlugin(): Plugin<SplitHandle> {
  const paths: string[] = [];

  return {
    name: "split",
    version: "1.0.0",
    longname: "nbdstate split plugin",
    description: "Concatenate several files into one disk.",
    magicConfigKey: "file",
    configHelp: "[file=]<FILENAME>  (required) File(s) to concatenate, in order (repeat for more).",

    config(key, value) {
      if (key !== "file") throw new Error(`split: unknown parameter '${key}'`);
      if (value === "") throw new Error("split: file parameter must not be empty");
      paths.push(resolve(value));
    },

    configComplete() {
      if (paths.length === 0) throw new Error("split: at least one file= parameter must be supplied");
      // Fail at startup, not on the first connection, for a missing file.
      for (const p of paths) {
        let st;
        try {
          st = statSync(p);
        } catch (e) {
          throw new Error(`split: ${p}: cannot access: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
        }
        if (!st.isFile()) throw new Error(`split: ${p}: not a regular file`);
      }
    },

    async open(readonly) {
      const files: BackingFile[] = [];
      try {
        for (const p of paths) files.push(await openBackingFile("split", p, readonly));
      } catch (e) {
        for (const f of files) await f.fh.close().catch(() => {});
        throw e;
      }
      const pieces: Piece[] = [];
      let size = 0;
      for (const file of files) {
        if (file.size > 0) pieces.push({ file, start: size });
        size += file.size;
      }
      return { files, pieces, size, readonly: files.some((f) => f.readonly) };
    },

    async close(h) {
      for (const f of h.files) await f.fh.close().catch(() => {});
    },

    getSize: (h) => h.size,
    canWrite: (h) => !h.readonly,
    canFlush: () => true,
    canMultiConn: () => true,
    canCache: () => "native",

    pread(h, buf, offset) {
      return eachFile(h, buf.length, offset, (f, at, pos, n) => readExact(f, buf.subarray(pos, pos + n), at));
    },

    pwrite(h, buf, offset) {
      return eachFile(h, buf.length, offset, (f, at, pos, n) => writeFull(f.fh, buf.subarray(pos, pos + n), at));
    },

    async flush(h) {
      for (const f of h.files) await f.fh.datasync();
    },

    cache(h, count, offset) {
      return eachFile(h, count, offset, (f, at, _pos, n) => readAhead(f.fh, n, at));
    },
  };
}
