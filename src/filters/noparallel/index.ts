// noparallel filter: reduce parallelism (nbdkit-noparallel-filter).
//   serialize=requests      one request at a time per connection (default)
//   serialize=all-requests  one request at a time over all connections
//   serialize=connections   one client connection at a time; multi-conn is
//                           no longer advertised
// nbdkit gets this from its thread model; here requests wait on a lock
// (per connection or shared), and a second connection waits in open.

import type { Filter } from "../../backend/types.js";
import { parseChoice } from "../kit/choice.js";
import { Mutex } from "../kit/lock.js";

const MODES = ["requests", "all-requests", "connections"] as const;
type Mode = (typeof MODES)[number];

interface Handle {
  /** The lock this connection's requests take. */
  lock: Mutex | null;
  /** serialize=connections: give the connection slot back. */
  release: (() => void) | null;
}

export default function createFilter(): Filter<Handle> {
  let mode: Mode = "requests";
  const global = new Mutex();

  const filter: Filter<Handle> = {
    name: "noparallel",
    version: "1.0.0",
    longname: "nbdstate noparallel filter",
    description: "Serialize requests or connections.",
    configHelp: "serialize=<MODE>      'requests' (default), 'all-requests', or 'connections'.",

    config(next, key, value) {
      if (key !== "serialize" && key !== "serialise") return next(key, value);
      mode = parseChoice("noparallel", "serialize", value, MODES, { all_requests: "all-requests", all: "all-requests" });
    },

    configComplete(next) {
      if (mode === "connections") Object.assign(filter, oneConnection(global));
      else Object.assign(filter, oneRequest(mode === "all-requests" ? global : null));
      return next();
    },
  };
  return filter;
}

/** serialize=connections: open waits for the slot, close gives it back. */
function oneConnection(slot: Mutex): Partial<Filter<Handle>> {
  return {
    async open(a) {
      const release = await slot.acquire();
      try {
        await a.next();
      } catch (e) {
        release();
        throw e;
      }
      return { lock: null, release };
    },
    close(h) {
      h.release?.();
      h.release = null;
    },
    // Parallel connections are not allowed, so multi-conn means nothing.
    canMultiConn: () => false,
  };
}

/** serialize=requests / all-requests: every data call under a lock. */
function oneRequest(shared: Mutex | null): Partial<Filter<Handle>> {
  return {
    open: () => ({ lock: shared ?? new Mutex(), release: null }),
    pread: (next, h, buf, off, fl) => h.lock!.run(() => next.pread(buf, off, fl)),
    preadSparse: (next, h, buf, off, fl) => h.lock!.run(() => next.preadSparse(buf, off, fl)),
    pwrite: (next, h, buf, off, fl) => h.lock!.run(() => next.pwrite(buf, off, fl)),
    flush: (next, h, fl) => h.lock!.run(() => next.flush(fl)),
    trim: (next, h, count, off, fl) => h.lock!.run(() => next.trim(count, off, fl)),
    zero: (next, h, count, off, fl) => h.lock!.run(() => next.zero(count, off, fl)),
    extents: (next, h, count, off, fl) => h.lock!.run(() => next.extents(count, off, fl)),
    cache: (next, h, count, off, fl) => h.lock!.run(() => next.cache(count, off, fl)),
  };
}
