// memory plugin: a sparse RAM disk shared by every connection.

import { FLAG_REQ_ONE } from "../../backend/types.js";
import type { DirectMemory, Plugin, ExportEntry, Extent } from "../../backend/types.js";
import { parseSize } from "../../backend/size.js";
import { SparseArray, PAGE_SIZE } from "./sparse.js";

/** The memory plugin's handle: nothing per connection, the disk is global. */
export interface MemoryHandle {
  readonly exportName: string;
  readonly readonly: boolean;
}

export interface MemoryPlugin extends Plugin<MemoryHandle> {
  /** The shared disk (exposed for tests and diagnostics). */
  readonly disk: SparseArray;
}

export default function createPlugin(): MemoryPlugin {
  let size: number | undefined;
  const disk = new SparseArray();
  const directMemory: DirectMemory = {
    view: (count, offset, out) => disk.view(count, offset, out),
    target: (count, offset, out) => disk.target(count, offset, out),
    release: () => disk.release(),
  };
  const readOnlyMemory: DirectMemory = { view: directMemory.view, release: directMemory.release };

  return {
    name: "memory",
    version: "1.0.0",
    longname: "nbdstate memory plugin",
    description: "A sparse RAM disk; all clients see the same contents, discarded on exit.",
    magicConfigKey: "size",
    configHelp:
      "size=<SIZE>          (required) Size of the backing disk.\n" +
      "allocator=sparse     Allocation strategy (only 'sparse' is available).",
    disk,

    config(key, value) {
      switch (key) {
        case "size":
          try {
            size = parseSize(value);
          } catch (e) {
            throw new Error(`memory: size: ${(e as Error).message}`);
          }
          return;
        case "allocator":
          if (value !== "sparse") {
            throw new Error(`memory: allocator '${value}' is not supported (only 'sparse' is available)`);
          }
          return;
        default:
          throw new Error(`memory: unknown parameter '${key}'`);
      }
    },

    configComplete() {
      if (size === undefined) throw new Error("memory: size parameter is required");
    },

    dumpPlugin() {
      return `memory_page_size=${PAGE_SIZE}\n`;
    },

    unload() {
      disk.clear();
    },

    listExports(): ExportEntry[] {
      return [{ name: "" }];
    },
    defaultExport() {
      return "";
    },

    open(readonly, exportName) {
      return { exportName, readonly };
    },

    // The pages themselves: READ replies are written from them and WRITE
    // payloads read into them (no copy), when no filter handles data.
    memory: (h) => (h.readonly ? readOnlyMemory : directMemory),

    getSize: () => size!,
    canWrite: () => true,
    canFlush: () => true,
    isRotational: () => false,
    canTrim: () => true,
    canZero: () => true,
    canFastZero: () => true,
    canFua: () => "native",
    canMultiConn: () => true,
    canExtents: () => true,
    canCache: () => "native",

    pread(_h, buf, offset) {
      disk.read(buf, offset);
    },
    // Pages never written go out as OFFSET_HOLE chunks, not zeros.
    preadSparse: (_h, buf, offset) => disk.readSparse(buf, offset),
    pwrite(_h, buf, offset) {
      disk.write(buf, offset);
    },
    flush() {},
    trim(_h, count, offset) {
      disk.zero(count, offset);
    },
    zero(_h, count, offset) {
      disk.zero(count, offset);
    },
    extents(_h, count, offset, flags): Extent[] {
      return disk.extents(count, offset, (flags & FLAG_REQ_ONE) !== 0);
    },
    cache() {
      // RAM is as cached as it gets.
    },
  };
}
