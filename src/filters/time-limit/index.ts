// time-limit filter (nbdkit-time-limit-filter, nbdkit >= 1.42): a client
// may stay connected for at most time-limit= (default 60 s); then it is
// disconnected. A timer per connection does it, so an idle client is
// dropped on time too, and requests pay nothing (nbdkit checks the clock
// on each request instead, and cannot drop an idle client).

import type { Filter, ServerServices } from "../../backend/types.js";
import { parseDelay } from "../kit/delay.js";

interface Handle {
  timer: NodeJS.Timeout | null;
}

export default function createFilter(): Filter<Handle> {
  let limitMs = 60_000; // 0 = off
  let server: ServerServices | null = null;

  const f: Filter<Handle> = {
    name: "time-limit",
    version: "1.0.0",
    longname: "nbdstate time-limit filter",
    description: "Set an overall time limit for each connection.",
    configHelp: "time-limit=TIME                Connection time limit (default 60s; 0 = none).",

    config(next, key, value) {
      if (key === "time-limit" || key === "time_limit" || key === "timelimit") {
        limitMs = parseDelay(`time-limit: ${key}`, value);
        return;
      }
      return next(key, value);
    },

    configComplete(next) {
      if (limitMs === 0) {
        delete f.open;
        delete f.close;
      }
      return next();
    },

    afterFork(_lower, services) {
      server = services;
    },

    async open(a) {
      await a.next();
      const conn = a.connection;
      // A context a filter above opened for itself belongs to no client.
      if (!conn) return { timer: null };
      const started = Math.min(conn.acceptedAt, Date.now());
      const timer = setTimeout(() => {
        server?.debug(`time-limit: ${conn.id}: time limit exceeded, connection closed`);
        conn.disconnect(true);
      }, Math.max(0, started + limitMs - Date.now()));
      timer.unref();
      return { timer };
    },

    close(h) {
      if (h.timer) clearTimeout(h.timer);
    },
  };
  return f;
}
