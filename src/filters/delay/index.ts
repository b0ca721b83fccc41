// delay filter (nbdkit-delay-filter): hold each kind of request for a
// fixed time before passing it on, to simulate a slow or remote server.
//
// Callbacks are installed at configComplete only for the requests that
// are delayed: every other request goes straight to the layer below.

import { parseBool } from "../../backend/size.js";
import { FLAG_FAST_ZERO, NbdError, type Filter } from "../../backend/types.js";
import { NBD_ENOTSUP } from "../../protocol/constants.js";
import { parseDelay, sleepMs } from "../kit/delay.js";

type Op = "read" | "write" | "zero" | "trim" | "extents" | "cache" | "flush" | "open" | "close";

/** Parameter names (nbdkit's, with its historical plural spellings). */
const KEYS: Record<string, Op[]> = {
  rdelay: ["read"],
  "delay-read": ["read"],
  "delay-reads": ["read"],
  // Historically wdelay sets every write-like delay.
  wdelay: ["write", "zero", "trim"],
  "delay-write": ["write"],
  "delay-writes": ["write"],
  "delay-zero": ["zero"],
  "delay-zeroes": ["zero"],
  "delay-trim": ["trim"],
  "delay-trims": ["trim"],
  "delay-discard": ["trim"],
  "delay-discards": ["trim"],
  "delay-extent": ["extents"],
  "delay-extents": ["extents"],
  "delay-cache": ["cache"],
  "delay-flush": ["flush"], // nbdstate: nbdkit cannot delay flush
  "delay-open": ["open"],
  "delay-close": ["close"],
};

export default function createFilter(): Filter {
  const ms: Record<Op, number> = { read: 0, write: 0, zero: 0, trim: 0, extents: 0, cache: 0, flush: 0, open: 0, close: 0 };
  let delayFastZero = true;

  const f: Filter = {
    name: "delay",
    version: "1.0.0",
    longname: "nbdstate delay filter",
    description: "Delay requests by a fixed time, to simulate a slow server.",
    configHelp:
      "rdelay=<NN>[ms]                Read delay in seconds/milliseconds.\n" +
      "delay-read=<NN>[ms]            Read delay in seconds/milliseconds.\n" +
      "delay-write=<NN>[ms]           Write delay in seconds/milliseconds.\n" +
      "delay-zero=<NN>[ms]            Zero delay in seconds/milliseconds.\n" +
      "delay-trim=<NN>[ms]            Trim delay in seconds/milliseconds.\n" +
      "delay-extents=<NN>[ms]         Extents delay in seconds/milliseconds.\n" +
      "delay-cache=<NN>[ms]           Cache delay in seconds/milliseconds.\n" +
      "delay-flush=<NN>[ms]           Flush delay in seconds/milliseconds.\n" +
      "wdelay=<NN>[ms]                Write, zero and trim delay in secs/msecs.\n" +
      "delay-fast-zero=<BOOL>         Delay fast zero requests (default true).\n" +
      "delay-open=<NN>[ms]            Open delay in seconds/milliseconds.\n" +
      "delay-close=<NN>[ms]           Close delay in seconds/milliseconds.\n" +
      "Delays also take fractions and s, us and ns suffixes (1.5, 250us).",

    config(next, key, value) {
      const ops = KEYS[key];
      if (ops) {
        const v = parseDelay(`delay: ${key}`, value);
        for (const op of ops) ms[op] = v;
        return;
      }
      if (key === "delay-fast-zero") {
        try {
          delayFastZero = parseBool(value);
        } catch (e) {
          throw new Error(`delay: ${key}: ${(e as Error).message}`);
        }
        return;
      }
      return next(key, value);
    },

    configComplete(next) {
      install();
      return next();
    },
  };

  function install(): void {
    const { read, write, zero, trim, extents, cache, flush, open, close } = ms;
    if (read > 0) {
      f.pread = async (n, _h, buf, off, fl) => {
        await sleepMs(read);
        return n.pread(buf, off, fl);
      };
      // Keep holes holes: a sparse read is delayed the same.
      f.preadSparse = async (n, _h, buf, off, fl) => {
        await sleepMs(read);
        return n.preadSparse(buf, off, fl);
      };
    }
    if (write > 0) {
      f.pwrite = async (n, _h, buf, off, fl) => {
        await sleepMs(write);
        return n.pwrite(buf, off, fl);
      };
    }
    if (zero > 0) {
      if (!delayFastZero) {
        // A fast zero fails at once, without asking below: so it can be
        // offered whatever the layer below says.
        f.canFastZero = () => true;
      }
      f.zero = async (n, _h, count, off, fl) => {
        if (fl & FLAG_FAST_ZERO && !delayFastZero) throw new NbdError(NBD_ENOTSUP, "delay: fast zero refused (delay-fast-zero=false)");
        await sleepMs(zero);
        return n.zero(count, off, fl);
      };
    }
    if (trim > 0) {
      f.trim = async (n, _h, count, off, fl) => {
        await sleepMs(trim);
        return n.trim(count, off, fl);
      };
    }
    if (extents > 0) {
      f.extents = async (n, _h, count, off, fl) => {
        await sleepMs(extents);
        return n.extents(count, off, fl);
      };
    }
    if (cache > 0) {
      f.cache = async (n, _h, count, off, fl) => {
        await sleepMs(cache);
        return n.cache(count, off, fl);
      };
    }
    if (flush > 0) {
      f.flush = async (n, _h, fl) => {
        await sleepMs(flush);
        return n.flush(fl);
      };
    }
    if (open > 0) {
      f.open = async (a) => {
        await sleepMs(open);
        await a.next();
        return undefined;
      };
    }
    if (close > 0) {
      // At finalize, so a client that disconnects gracefully (NBD_CMD_DISC)
      // waits; close comes after the socket is gone.
      f.finalize = () => sleepMs(close);
    }
  }

  return f;
}
