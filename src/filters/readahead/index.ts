// readahead filter (nbdkit-readahead-filter): on every read, ask the layer
// below to prefetch (NBD_CMD_CACHE) what follows it, in the background.
// The window adapts as nbdkit's: it doubles (up to 4 MiB) while reads stay
// ahead of the last prefetch, stays while they move forward, and falls back
// to 32 KiB when they go back. Useful only when the layer below caches
// (cache=native): a cache or cow (cow-on-cache=true) filter below, or a
// plugin with its own cache; otherwise the filter warns once and does nothing.

import type { Context, Filter, ServerServices } from "../../backend/types.js";

const READAHEAD_MIN = 32 * 1024;
const READAHEAD_MAX = 4 * 1024 * 1024;
/** Prefetches waiting per connection; older ones are dropped when reads outrun them. */
const MAX_QUEUED = 8;

interface ReadaheadHandle {
  working: boolean;
  queue: { count: number; offset: number }[];
  worker: Promise<void> | null;
  closed: boolean;
}

export default function createFilter(): Filter<ReadaheadHandle> {
  // Shared by all connections, as in nbdkit.
  let window = READAHEAD_MIN;
  let lastOffset = 0;
  let lastReadahead = 0;
  let services: ServerServices | null = null;
  let warned = false;

  function warn(msg: string): void {
    if (warned) return;
    warned = true;
    const line = `readahead: warning: ${msg}`;
    if (services) services.log(line);
    else process.stderr.write(`nbdstate: ${line}\n`);
  }

  /** Run the queued prefetches one at a time; errors are ignored (a prefetch is only a hint). */
  async function work(next: Context, h: ReadaheadHandle): Promise<void> {
    while (!h.closed && h.queue.length > 0) {
      const c = h.queue.shift()!;
      await next.cache(c.count, c.offset, 0).catch(() => {});
    }
    h.worker = null;
  }

  return {
    name: "readahead",
    version: "1.0.0",
    longname: "nbdstate readahead filter",
    description: "Prefetch data ahead of sequential reads.",
    configHelp: "(no parameters of its own: they go to the plugin)",

    afterFork(_lower, server) {
      services = server;
    },

    open() {
      return { working: false, queue: [], worker: null, closed: false };
    },

    async prepare(next, h) {
      h.working = (await next.canCache()) === "native";
      if (!h.working) {
        warn("the layer below does not support NBD_CMD_CACHE, so the filter won't do anything; try adding --filter=cache after this filter");
      }
    },

    async close(h) {
      h.closed = true;
      h.queue.length = 0;
      await h.worker;
    },

    async pread(next, h, buf, offset, flags) {
      if (h.working) {
        const size = await next.getSize();
        const count = buf.length;
        const raOffset = offset + count;
        let raCount = 0;
        if (raOffset < size) raCount = Math.min(window, size - raOffset);
        if (lastReadahead < offset) window = Math.min(window * 2, READAHEAD_MAX);
        else if (!(lastOffset < offset)) window = READAHEAD_MIN;
        lastOffset = offset;
        lastReadahead = raOffset + raCount;
        if (raCount > 0) {
          if (h.queue.length >= MAX_QUEUED) h.queue.shift();
          h.queue.push({ count: raCount, offset: raOffset });
          h.worker ??= work(next, h);
        }
      }
      return next.pread(buf, offset, flags);
    },
  };
}
