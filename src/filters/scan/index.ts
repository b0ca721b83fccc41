// scan filter (nbdkit-scan-filter): while a client is connected to the
// default export, prefetch (NBD_CMD_CACHE) the whole disk from start to
// end in scan-size pieces, in the background, so a later sequential read
// finds it cached. Useful only when the layer below caches (a cache or cow
// filter below, or a plugin with its own cache); otherwise it warns and
// does nothing.

import { setImmediate as yieldTurn } from "node:timers/promises";
import { parseBool, parseSize } from "../../backend/size.js";
import type { Context, Filter, ServerServices } from "../../backend/types.js";

interface ScanHandle {
  isDefault: boolean;
  /** The furthest a client read ended (scan-ahead skips to it). */
  notify: number;
  running: Promise<void> | null;
  stop: boolean;
}

export default function createFilter(): Filter<ScanHandle> {
  let scanAhead = true;
  let scanClock = true;
  let scanForever = false;
  let scanSize = 2 * 1024 * 1024;
  let services: ServerServices | null = null;
  /** Where scanning resumes (scan-clock), shared by all connections. */
  let clock = 0;

  const warn = (msg: string) => {
    const line = `scan: warning: ${msg}`;
    if (services) services.log(line);
    else process.stderr.write(`nbdstate: ${line}\n`);
  };

  async function scan(next: Context, h: ScanHandle): Promise<void> {
    const size = await next.getSize();
    do {
      let offset = scanClock ? clock : 0;
      while (offset < size && !h.stop) {
        // A read ended beyond: skip to it (each notification is used once).
        if (h.notify > offset) offset = h.notify;
        h.notify = 0;
        if (clock < offset) clock = offset;
        if (offset >= size) break;
        await next.cache(Math.min(scanSize, size - offset), offset, 0).catch(() => {});
        offset += scanSize;
        // A cache that answers at once must not starve the server's I/O.
        await yieldTurn();
      }
      if (scanForever && !h.stop) clock = 0;
    } while (scanForever && !h.stop);
  }

  const f: Filter<ScanHandle> = {
    name: "scan",
    version: "1.0.0",
    longname: "nbdstate scan filter",
    description: "Prefetch the whole disk in the background while a client is connected.",
    configHelp:
      "scan-ahead=false         Skip ahead when client reads faster.\n" +
      "scan-clock=false         Always start prefetching from beginning.\n" +
      "scan-forever=true        Scan in a loop while clients connected.\n" +
      "scan-size=NN             Set scan block size.",

    config(next, key, value) {
      const bool = () => {
        try {
          return parseBool(value);
        } catch (e) {
          throw new Error(`scan: ${key}: ${(e as Error).message}`);
        }
      };
      switch (key) {
        case "scan-ahead":
          scanAhead = bool();
          return;
        case "scan-clock":
          scanClock = bool();
          return;
        case "scan-forever":
          scanForever = bool();
          return;
        case "scan-size":
          try {
            scanSize = parseSize(value);
          } catch (e) {
            throw new Error(`scan: scan-size: ${(e as Error).message}`);
          }
          return;
        default:
          return next(key, value);
      }
    },

    configComplete(next) {
      if (scanSize < 512 || scanSize > 32 * 1024 * 1024 || (scanSize & (scanSize - 1)) !== 0) {
        throw new Error("scan: scan-size parameter should be [512..32M] and a power of two");
      }
      // Without scan-ahead, reads have nothing to tell the scan: no callback, no cost.
      if (!scanAhead) delete f.pread;
      return next();
    },

    afterFork(_lower, server) {
      services = server;
    },

    async open(a) {
      await a.next();
      const def = await a.lower.defaultExport({ readonly: a.readonly, tls: a.tls });
      return { isDefault: a.exportName === (def ?? ""), notify: 0, running: null, stop: false };
    },

    async prepare(next, h) {
      if (!h.isDefault) {
        warn("not the default export, not scanning");
        return;
      }
      if ((await next.canCache()) !== "native") {
        warn("the layer below does not support NBD_CMD_CACHE, not scanning; try adding --filter=cache after this filter");
        return;
      }
      h.running = scan(next, h).catch(() => {});
    },

    async finalize(_next, h) {
      h.stop = true;
      await h.running;
    },

    async close(h) {
      // Also when finalize was not called (a connection that failed).
      h.stop = true;
      await h.running;
    },

    pread(next, h, buf, offset, flags) {
      if (h.running && offset + buf.length > h.notify) h.notify = offset + buf.length;
      return next.pread(buf, offset, flags);
    },
  };
  return f;
}
