// memory plugin: a sparse RAM disk shared by every connection.

import { FLAG_REQ_ONE } from "../../backend/types.js";
import type { DirectMemory, Plugin, ExportEntry, Extent } from "../../backend/types.js";
import { parseSize } from "../../backend/size.js";
import { SparseArray, PAGE_SIZE } from "./sparse.js";
import { SharedDisk, sharedDiskUnavailable, type SharedDiskState } from "./shared-disk.js";

/** The memory plugin's handle: nothing per connection, the disk is global. */
export interface MemoryHandle {
  readonly exportName: string;
  readonly readonly: boolean;
}

/** What the plugin needs of its disk: SparseArray (one thread) or SharedDisk (worker threads). */
export type Disk = Pick<SparseArray, "read" | "readSparse" | "write" | "zero" | "extents" | "view" | "target" | "release" | "clear" | "allocatedPages"> & {
  written?(count: number, offset: number): void;
};

export interface MemoryPlugin extends Plugin<MemoryHandle> {
  /** The disk every connection shares (exposed for tests and diagnostics). */
  readonly disk: Disk;
}

export default function createPlugin(): MemoryPlugin {
  let size: number | undefined;
  let disk: Disk = new SparseArray();
  let shared: SharedDisk | null = null;
  let joined = false;
  const directMemory: DirectMemory = {
    view: (count, offset, out) => disk.view(count, offset, out),
    target: (count, offset, out) => disk.target(count, offset, out),
    release: () => disk.release(),
    written: (count, offset) => disk.written?.(count, offset),
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
    get disk() {
      return disk;
    },

    // Worker threads: the disk moves to one mmap every thread sees
    // (shared-disk.ts). share() comes before any client, so the sparse
    // disk it replaces is still empty.
    threads: {
      share(): SharedDiskState | null {
        if (shared) return shared.state;
        if (disk.allocatedPages > 0 || sharedDiskUnavailable() !== "") return null;
        shared = SharedDisk.create(size!);
        disk = shared;
        return shared.state;
      },
      join(state) {
        joined = true;
        shared = SharedDisk.attach(state as SharedDiskState);
        disk = shared;
      },
    },

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
      // A worker thread's instance leaves the disk to the main thread's.
      if (!joined) disk.clear();
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
