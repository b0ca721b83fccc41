// multi-conn filter: enable, emulate or disable NBD_FLAG_CAN_MULTI_CONN
// (nbdkit-multi-conn-filter).
//   multi-conn-mode=auto|emulate|plugin|unsafe|disable
//   multi-conn-track-dirty=connection|fast|off
//   multi-conn-exportname=BOOL
// Emulation: a flush on one connection (or a write with FUA) is replayed
// on every connection of the group (all connections, or those on the same
// export), skipping the ones dirty tracking says are clean.

import { parseBool } from "../../backend/size.js";
import { FLAG_FUA, type Context, type Filter } from "../../backend/types.js";
import { parseChoice } from "../kit/choice.js";
import { Mutex } from "../kit/lock.js";

const MODES = ["auto", "emulate", "plugin", "unsafe", "disable"] as const;
const TRACK = ["connection", "fast", "off"] as const;
type Mode = (typeof MODES)[number];
type Track = (typeof TRACK)[number];

const WRITE = 1; // a write may have left data in a cache
const READ = 2; // a read may have filled a cache with stale data

interface Group {
  name: string;
  conns: Set<Handle>;
  /** Some connection of the group wrote since the last flush. */
  dirty: boolean;
  /** Replays and membership changes, one at a time. */
  lock: Mutex;
}

interface Handle {
  exportName: string;
  /** auto resolved for this connection (at prepare). */
  mode: Exclude<Mode, "auto">;
  dirty: number;
  next: Context | null;
  group: Group | null;
}

export default function createFilter(): Filter<Handle> {
  let mode: Mode = "auto";
  let track: Track = "connection";
  let byName = false;
  const groups = new Map<string, Group>();

  function markDirty(h: Handle, write: boolean): void {
    if (track === "off") return;
    if (track === "connection") h.dirty |= write ? WRITE : READ;
    if (write) h.group!.dirty = true;
  }

  async function flush(next: Context, h: Handle, flags: number): Promise<void> {
    const g = h.group!;
    if (h.mode === "emulate") {
      await g.lock.run(async () => {
        for (const o of g.conns) {
          const needed = track === "off" || (g.dirty && (track === "fast" || o.dirty & READ)) || o.dirty & WRITE;
          if (!needed) continue;
          await o.next!.flush(flags);
          o.dirty = 0;
        }
        g.dirty = false;
      });
      return;
    }
    // Not emulating: skip a flush when nothing in the group is dirty.
    if (track !== "off" && !g.dirty) return;
    await next.flush(flags);
    if (track === "connection") {
      if (await next.canMultiConn()) {
        for (const o of g.conns) o.dirty = 0;
        g.dirty = false;
      } else {
        h.dirty = 0;
      }
    } else if (track === "fast") {
      g.dirty = false;
    }
  }

  /**
   * A write-like request: whether it goes down with FUA as it is. Without
   * FUA it marks the connection dirty; with FUA under emulation it marks
   * it too, and the caller sends it without FUA and then replays a flush.
   */
  function plainWrite(h: Handle, flags: number): boolean {
    if (!(flags & FLAG_FUA)) {
      markDirty(h, true);
      return true;
    }
    if (h.mode !== "emulate") return true;
    markDirty(h, true);
    return false;
  }

  async function leave(h: Handle): Promise<void> {
    const g = h.group;
    if (!g) return;
    h.group = null;
    // Wait for a replay in progress, which may be flushing this connection.
    await g.lock.run(async () => {
      g.conns.delete(h);
      if (g.conns.size === 0 && groups.get(g.name) === g) groups.delete(g.name);
    });
  }

  const filter: Filter<Handle> = {
    name: "multi-conn",
    version: "1.0.0",
    longname: "nbdstate multi-conn filter",
    description: "Enable, emulate or disable multi-conn.",
    configHelp:
      "multi-conn-mode=<MODE>          'auto' (default), 'emulate', 'plugin',\n" +
      "                                'disable', or 'unsafe'.\n" +
      "multi-conn-track-dirty=<LEVEL>  'connection' (default), 'fast', or 'off'.\n" +
      "multi-conn-exportname=<BOOL>    true to limit emulation by export name.",

    config(next, key, value) {
      switch (key) {
        case "multi-conn-mode":
          mode = parseChoice("multi-conn", key, value, MODES);
          return;
        case "multi-conn-track-dirty":
          track = parseChoice("multi-conn", key, value, TRACK, { conn: "connection" });
          return;
        case "multi-conn-exportname":
        case "multi-conn-export-name":
          try {
            byName = parseBool(value);
          } catch (e) {
            throw new Error(`multi-conn: ${key}: ${(e as Error).message}`);
          }
          return;
        default:
          return next(key, value);
      }
    },

    configComplete(next) {
      // With nothing to track and nothing to emulate, only the flags change.
      const emulating = mode === "auto" || mode === "emulate";
      if (track === "off" && !emulating) {
        delete filter.pread;
        delete filter.cache;
        delete filter.pwrite;
        delete filter.trim;
        delete filter.zero;
        delete filter.flush;
      } else if (track !== "connection") {
        // Reads only matter to per-connection tracking.
        delete filter.pread;
        delete filter.cache;
      }
      return next();
    },

    open(a) {
      return { exportName: a.exportName, mode: "disable", dirty: 0, next: null, group: null };
    },

    async prepare(next, h) {
      h.next = next;
      h.mode = mode === "auto" ? ((await next.canMultiConn()) ? "plugin" : "emulate") : mode;
      if (h.mode === "emulate" && !(await next.canFlush())) {
        throw new Error("multi-conn: emulating multi-conn requires working flush");
      }
      const key = byName ? h.exportName : "";
      let g = groups.get(key);
      if (!g) {
        g = { name: key, conns: new Set(), dirty: false, lock: new Mutex() };
        groups.set(key, g);
      }
      const group = g;
      await group.lock.run(async () => void group.conns.add(h));
      h.group = group;
    },

    finalize(_next, h) {
      return leave(h);
    },
    // Also here: a connection that failed is closed without finalize.
    close(h) {
      return leave(h);
    },

    async canFua(next, h) {
      // Native FUA on one connection is not seen by the others; emulated
      // FUA goes through the replayed flush.
      const fua = await next.canFua();
      return fua === "native" && h.mode === "emulate" ? "emulate" : fua;
    },
    async canMultiConn(next, h) {
      switch (h.mode) {
        case "emulate":
        case "unsafe":
          return true;
        case "plugin":
          return next.canMultiConn();
        default:
          return false;
      }
    },

    pread(next, h, buf, off, flags) {
      markDirty(h, false);
      return next.pread(buf, off, flags);
    },
    cache(next, h, count, off, flags) {
      markDirty(h, false);
      return next.cache(count, off, flags);
    },
    pwrite(next, h, buf, off, flags) {
      if (plainWrite(h, flags)) return next.pwrite(buf, off, flags);
      return next.pwrite(buf, off, flags & ~FLAG_FUA).then(() => flush(next, h, 0));
    },
    trim(next, h, count, off, flags) {
      if (plainWrite(h, flags)) return next.trim(count, off, flags);
      return next.trim(count, off, flags & ~FLAG_FUA).then(() => flush(next, h, 0));
    },
    zero(next, h, count, off, flags) {
      if (plainWrite(h, flags)) return next.zero(count, off, flags);
      return next.zero(count, off, flags & ~FLAG_FUA).then(() => flush(next, h, 0));
    },
    flush(next, h, flags) {
      return flush(next, h, flags);
    },
  };
  return filter;
}
