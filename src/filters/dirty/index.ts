// dirty filter: changed-block tracking. Every write, zero and trim marks
// the dirty-block-size blocks it touches in a bitmap that clients read as
// the metadata context qemu:dirty-bitmap:NAME, with qemu's semantics
// (NBD_STATE_DIRTY = 1), so backup tools that copy only what changed work
// with any plugin. A checkpoint (SIGUSR1 to the server) freezes the bitmap
// as qemu:dirty-bitmap:NAME@N and starts a clean one; dirty-file= keeps
// them across restarts (store.ts says how a crash reads as all dirty).
//
// Bits are set when a request completes, successful or not (a failed write
// may have written part), never before: a write that straddles a
// checkpoint lands in the new bitmap, so the next incremental copy has it.

import { parseBlockSizeParam } from "../kit/block-size.js";
import type { Filter, ServerServices } from "../../backend/types.js";
import { FLAG_REQ_ONE } from "../../backend/types.js";
import { DirtyBitmap } from "./bitmap.js";
import { loadDirtyFile, saveDirtyFile, type ExportBitmaps } from "./store.js";

export const CONTEXT_PREFIX = "qemu:dirty-bitmap:";
/** The signal that takes a checkpoint. */
export const CHECKPOINT_SIGNAL = "SIGUSR1";
/** Frozen checkpoints kept per export; older ones are dropped. */
export const KEEP_CHECKPOINTS = 16;

interface DirtyHandle {
  exportName: string;
  bm: ExportBitmaps | null;
}

export default function createFilter(): Filter<DirtyHandle> {
  let name = "dirty";
  let blockSize = 65536;
  let file: string | undefined;
  const exports = new Map<string, ExportBitmaps>();
  let server: ServerServices | undefined;
  /** Messages from before afterFork (no log yet). */
  const early: string[] = [];
  let saving: Promise<void> = Promise.resolve();
  let onSignal: (() => void) | undefined;
  /** getReady wrote the file "open": unload must write it "closed". */
  let savedOpen = false;

  const log = (m: string) => (server ? server.log(m) : early.push(m));

  /** Saves run one after another, each with the state at its turn. */
  function save(state: "open" | "closed"): Promise<void> {
    if (!file) return Promise.resolve();
    const path = file;
    const p = saving.then(() => saveDirtyFile(path, name, blockSize, exports, state));
    saving = p.catch(() => {});
    return p;
  }

  function bitmapsFor(exportName: string, size: number): ExportBitmaps {
    let e = exports.get(exportName);
    if (e && e.size !== size) {
      // A bitmap of another size says nothing reliable about this disk.
      log(`dirty: export '${exportName.slice(0, 256)}' changed size from ${e.size} to ${size}: every block is dirty, checkpoints dropped`);
      e = undefined;
      const fresh = new DirtyBitmap(size, blockSize);
      fresh.markAll();
      exports.set(exportName, { size, active: fresh, frozen: new Map(), next: 1 });
    }
    if (!e) {
      e = exports.get(exportName);
      if (!e) {
        // Tracking starts now: nothing has changed yet.
        e = { size, active: new DirtyBitmap(size, blockSize), frozen: new Map(), next: 1 };
        e.active.changed = true;
        exports.set(exportName, e);
      }
    }
    return e;
  }

  /** Freeze every export's bitmap as NAME@N and start clean ones. */
  async function checkpoint(): Promise<void> {
    for (const [exportName, e] of exports) {
      const n = e.next++;
      const frozen = e.active.copy();
      e.frozen.set(n, frozen);
      e.active.clear();
      while (e.frozen.size > KEEP_CHECKPOINTS) e.frozen.delete(e.frozen.keys().next().value!);
      log(`dirty: checkpoint ${n} of export '${exportName.slice(0, 256)}': ${frozen.count()} of ${frozen.nblocks} blocks dirty, frozen as ${CONTEXT_PREFIX}${name}@${n}`);
    }
    await save("open");
  }

  const contextsOf = (exportName: string): string[] => {
    const out = [CONTEXT_PREFIX + name];
    for (const n of exports.get(exportName)?.frozen.keys() ?? []) out.push(`${CONTEXT_PREFIX}${name}@${n}`);
    return out;
  };

  /** The bitmap a context name selects, or null if it is not one of ours. */
  const bitmapOf = (e: ExportBitmaps, context: string): DirtyBitmap | null => {
    if (!context.startsWith(CONTEXT_PREFIX)) return null;
    const rest = context.slice(CONTEXT_PREFIX.length);
    if (rest === name) return e.active;
    if (!rest.startsWith(`${name}@`)) return null;
    const n = Number(rest.slice(name.length + 1));
    return Number.isInteger(n) ? (e.frozen.get(n) ?? null) : null;
  };

  const mark = (h: DirtyHandle, offset: number, count: number) => {
    if (h.bm) h.bm.active.mark(offset, count);
  };

  return {
    name: "dirty",
    version: "1.0.0",
    longname: "nbdstate changed-block tracking filter",
    description: "Tracks written, zeroed and trimmed blocks in a bitmap served as the qemu:dirty-bitmap:NAME metadata context.",
    configHelp:
      "dirty-bitmap=<NAME>       Name of the bitmap (context qemu:dirty-bitmap:NAME) [dirty].\n" +
      "dirty-block-size=<SIZE>   Tracking granularity, a power of 2 [64K].\n" +
      "dirty-file=<PATH>         Keep the bitmaps in PATH across restarts.\n" +
      "Send SIGUSR1 to the server to take a checkpoint (NAME frozen as NAME@N).",

    config(next, key, value) {
      switch (key) {
        case "dirty-bitmap":
          // Context names are UTF-8 text without NUL (the spec), and ours end in NAME@N.
          if (value === "" || /[\u0000-\u001f@]/.test(value) || Buffer.byteLength(value) > 1024) {
            throw new Error(`dirty: dirty-bitmap: a name of 1 to 1024 bytes without control characters or '@' is needed: '${value}'`);
          }
          name = value;
          return;
        case "dirty-block-size":
          blockSize = parseBlockSizeParam("dirty", key, value, 512);
          return;
        case "dirty-file":
          if (value === "") throw new Error("dirty: dirty-file: a path is needed");
          file = value;
          return;
        default:
          return next(key, value);
      }
    },

    async getReady() {
      if (!file) return;
      const loaded = await loadDirtyFile(file, blockSize);
      if (loaded) {
        for (const [k, v] of loaded.exports) exports.set(k, v);
        if (loaded.crashed) log(`dirty: ${file} was not closed cleanly (the server stopped without a clean exit): every block reads as dirty`);
      }
      // Written "open" before serving: if this server dies, the next one knows.
      await save("open");
      savedOpen = true;
    },

    afterFork(_lower, s) {
      server = s;
      for (const m of early.splice(0)) s.log(m);
      onSignal = () => void checkpoint().catch((e) => s.log(`dirty: checkpoint: ${(e as Error).message}`));
      process.on(CHECKPOINT_SIGNAL, onSignal);
    },

    async unload() {
      if (onSignal) process.off(CHECKPOINT_SIGNAL, onSignal);
      onSignal = undefined;
      // Also after a start that failed later (no client was served): the bitmaps are whole.
      if (file && savedOpen) await save("closed");
    },

    async open(a) {
      await a.next(a.readonly, a.exportName);
      return { exportName: a.exportName, bm: null };
    },

    async prepare(next, h) {
      h.bm = bitmapsFor(h.exportName, await next.getSize());
    },

    async pwrite(next, h, buf, offset, flags) {
      try {
        await next.pwrite(buf, offset, flags);
      } finally {
        mark(h, offset, buf.length);
      }
    },
    async zero(next, h, count, offset, flags) {
      try {
        await next.zero(count, offset, flags);
      } finally {
        mark(h, offset, count);
      }
    },
    async trim(next, h, count, offset, flags) {
      try {
        await next.trim(count, offset, flags);
      } finally {
        mark(h, offset, count);
      }
    },
    async flush(next, _h, flags) {
      await next.flush(flags);
      // The bitmap goes to disk with the data (still "open": later writes may follow).
      if (file && [...exports.values()].some((e) => e.active.changed)) await save("open");
    },

    async metaContexts(lower, exportName) {
      return [...(await lower.metaContexts(exportName)), ...contextsOf(exportName)];
    },

    contextExtents(next, h, context, count, offset, flags) {
      const bm = h.bm ? bitmapOf(h.bm, context) : null;
      if (!bm) return next.contextExtents(context, count, offset, flags);
      return bm.extents(offset, count, (flags & FLAG_REQ_ONE) !== 0);
    },
  };
}
