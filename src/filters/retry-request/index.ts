// retry-request filter (nbdkit-retry-request-filter): when a single
// request fails, wait and send the same request again, up to N times,
// on the same context below (the retry filter reopens it instead).

import { parseBool } from "../../backend/size.js";
import { FLAG_FAST_ZERO, NbdError, type Filter, type ServerServices } from "../../backend/types.js";
import { NBD_ENOTSUP } from "../../protocol/constants.js";
import { parseDelay, sleepMs } from "../kit/delay.js";

export default function createFilter(): Filter {
  let retries = 2; // 0 = the filter is off
  let delayMs = 2000;
  let retryOpen = true;
  let server: ServerServices | null = null;

  /** Wraps an error that must not be retried. */
  class Final {
    constructor(readonly err: unknown) {}
  }

  /** Run op; on failure wait and run it again, at most `retries` more times. */
  async function retry<T>(op: () => Promise<T>): Promise<T> {
    for (let i = 0; ; i++) {
      try {
        return await op();
      } catch (e) {
        if (e instanceof Final) throw e.err;
        if (i >= retries) throw e;
      }
      server?.debug(`retry-request: retry ${i + 1}: waiting ${delayMs / 1000} seconds before retrying`);
      await sleepMs(delayMs);
    }
  }

  const f: Filter = {
    name: "retry-request",
    version: "1.0.0",
    longname: "nbdstate retry-request filter",
    description: "Retry single requests that fail.",
    configHelp:
      "retry-request-retries=<N> Number of retries (default: 2).\n" +
      "retry-request-delay=<N>   Seconds to wait before retry (default: 2).\n" +
      "retry-request-open=false  Do not retry opening the plugin (default: true).",

    config(next, key, value) {
      switch (key) {
        case "retry-request-retries": {
          if (!/^\s*[0-9]+\s*$/.test(value)) throw new Error(`retry-request: ${key}: could not parse number: '${value}'`);
          const n = Number(value);
          if (n > 1000) throw new Error(`retry-request: ${key}: value too large`);
          retries = n;
          return;
        }
        case "retry-request-delay":
          delayMs = parseDelay(`retry-request: ${key}`, value);
          if (delayMs === 0) throw new Error(`retry-request: ${key} cannot be 0`);
          return;
        case "retry-request-open":
          try {
            retryOpen = parseBool(value);
          } catch (e) {
            throw new Error(`retry-request: ${key}: ${(e as Error).message}`);
          }
          return;
        default:
          return next(key, value);
      }
    },

    configComplete(next) {
      if (retries > 0) install();
      return next();
    },

    afterFork(_lower, services) {
      server = services;
    },
  };

  function install(): void {
    // An open that failed left nothing below, so next() may be called again.
    if (retryOpen) f.open = async (a) => void (await retry(() => a.next()));
    f.getSize = (n) => retry(() => n.getSize());
    f.pread = (n, _h, buf, off, fl) => retry(() => n.pread(buf, off, fl));
    f.preadSparse = (n, _h, buf, off, fl) => retry(() => n.preadSparse(buf, off, fl));
    f.pwrite = (n, _h, buf, off, fl) => retry(() => n.pwrite(buf, off, fl));
    f.trim = (n, _h, count, off, fl) => retry(() => n.trim(count, off, fl));
    f.flush = (n, _h, fl) => retry(() => n.flush(fl));
    f.zero = (n, _h, count, off, fl) =>
      retry(async () => {
        try {
          return await n.zero(count, off, fl);
        } catch (e) {
          // A fast zero refused as "not fast" is an answer, not a failure:
          // the client falls back to writing, the sooner the better.
          if (fl & FLAG_FAST_ZERO && e instanceof NbdError && e.errno === NBD_ENOTSUP) throw new Final(e);
          throw e;
        }
      });
    f.extents = (n, _h, count, off, fl) => retry(() => n.extents(count, off, fl));
    f.cache = (n, _h, count, off, fl) => retry(() => n.cache(count, off, fl));
  }

  return f;
}
