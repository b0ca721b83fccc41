// The dirty-file: every export's bitmaps, kept across restarts. One JSON
// document, replaced atomically (written beside, fsynced, renamed over,
// the directory fsynced), so a crash leaves the old file or the new one,
// never half of one.
//
// Crash safety is the "state" field, as qemu's "in use" flag on a qcow2
// persistent bitmap: the server writes "open" before it serves and on
// every flush and checkpoint, and "closed" only at a clean exit. A file
// found "open" at startup was left by a server that died, whose last writes
// may be missing from it: its active bitmaps are then read as all dirty
// (never as clean). Frozen checkpoints were complete when written and are
// kept.

import { open, readFile, rename } from "node:fs/promises";
import { dirname } from "node:path";
import { DirtyBitmap } from "./bitmap.js";

export const FORMAT = "nbdstate-dirty-bitmap";
export const VERSION = 1;

export interface ExportBitmaps {
  size: number;
  active: DirtyBitmap;
  /** Frozen checkpoints by number, oldest first. */
  frozen: Map<number, DirtyBitmap>;
  /** The number the next checkpoint gets. */
  next: number;
}

interface FileExport {
  size: number;
  active: string;
  checkpoints: Array<{ n: number; bits: string }>;
  next: number;
}

interface FileDoc {
  format: string;
  version: number;
  state: "open" | "closed";
  bitmap: string;
  blockSize: number;
  exports: Record<string, FileExport>;
}

export interface Loaded {
  exports: Map<string, ExportBitmaps>;
  /** The file was left "open": its active bitmaps were set all dirty. */
  crashed: boolean;
}

/** Read PATH; null if it does not exist. Throws on a file that is not ours or does not fit. */
export async function loadDirtyFile(path: string, blockSize: number): Promise<Loaded | null> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
  let doc: FileDoc;
  try {
    doc = JSON.parse(text) as FileDoc;
  } catch {
    throw new Error(`${path}: not a dirty-file (not JSON)`);
  }
  if (doc?.format !== FORMAT || typeof doc.exports !== "object" || doc.exports === null) throw new Error(`${path}: not a dirty-file`);
  if (doc.version !== VERSION) throw new Error(`${path}: dirty-file version ${doc.version} is not supported (this server writes ${VERSION})`);
  if (doc.blockSize !== blockSize) {
    throw new Error(`${path}: written with dirty-block-size=${doc.blockSize}, not ${blockSize} (remove the file to start tracking afresh)`);
  }
  const crashed = doc.state !== "closed";
  const exports = new Map<string, ExportBitmaps>();
  for (const [name, e] of Object.entries(doc.exports)) {
    if (!Number.isSafeInteger(e.size) || e.size < 0 || !Number.isSafeInteger(e.next)) throw new Error(`${path}: export '${name}': bad size or checkpoint number`);
    const bitmap = (b64: string) => new DirtyBitmap(e.size, blockSize, new Uint8Array(Buffer.from(b64, "base64")));
    let active: DirtyBitmap;
    const frozen = new Map<number, DirtyBitmap>();
    try {
      active = bitmap(e.active);
      for (const c of e.checkpoints) frozen.set(c.n, bitmap(c.bits));
    } catch (err) {
      throw new Error(`${path}: export '${name}': ${(err as Error).message}`);
    }
    if (crashed) active.markAll();
    active.changed = false;
    exports.set(name, { size: e.size, active, frozen, next: e.next });
  }
  return { exports, crashed };
}

/** Replace PATH with the bitmaps in STATE, atomically and durably. */
export async function saveDirtyFile(path: string, bitmapName: string, blockSize: number, exports: Map<string, ExportBitmaps>, state: "open" | "closed"): Promise<void> {
  const doc: FileDoc = { format: FORMAT, version: VERSION, state, bitmap: bitmapName, blockSize, exports: {} };
  for (const [name, e] of exports) {
    doc.exports[name] = {
      size: e.size,
      active: Buffer.from(e.active.bits).toString("base64"),
      checkpoints: [...e.frozen].map(([n, b]) => ({ n, bits: Buffer.from(b.bits).toString("base64") })),
      next: e.next,
    };
  }
  const tmp = `${path}.tmp`;
  const fh = await open(tmp, "w", 0o600);
  try {
    await fh.writeFile(JSON.stringify(doc));
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  // The rename itself is durable only once the directory is.
  const dir = await open(dirname(path), "r");
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
  for (const e of exports.values()) e.active.changed = false;
}
