// rate filter (nbdkit-rate-filter): limit the bandwidth of reads and
// writes, for the whole server (rate=) and per connection
// (connection-rate=), in bits per second. Zero and trim are free (only a
// small message crosses the wire). rate-file= / connection-rate-file= hold
// a rate that is re-read while the server runs.

import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { parseSize } from "../../backend/size.js";
import type { Filter, ServerServices } from "../../backend/types.js";
import { sleepMs } from "../kit/delay.js";
import { Bucket } from "./bucket.js";

interface RateHandle {
  read: Bucket;
  write: Bucket;
}

/** How often a rate file is looked at, at most (ms). */
const FILE_CHECK_MS = 100;

export default function createFilter(): Filter<RateHandle> {
  let rate = 0;
  let connectionRate = 0;
  let rateFile: string | null = null;
  let connectionRateFile: string | null = null;
  let burstiness = 2.0;
  let server: ServerServices | null = null;
  let globalRead: Bucket;
  let globalWrite: Bucket;

  /** A rate file's last good value, re-read at most every FILE_CHECK_MS. */
  class RateFile {
    private checked = -Infinity;
    value: number | null = null;
    constructor(readonly path: string) {}
    current(): number | null {
      const now = performance.now();
      if (now - this.checked >= FILE_CHECK_MS) {
        this.checked = now;
        let text: string;
        try {
          text = readFileSync(this.path, "utf8");
        } catch {
          return this.value; // absent (or deleted): the last rate holds
        }
        const line = text.split("\n", 1)[0]!.trim();
        try {
          const v = parseSize(line);
          if (v !== this.value) server?.debug(`rate: ${this.path}: rate adjusted to ${v}`);
          this.value = v;
        } catch (e) {
          server?.debug(`rate: ${this.path}: ${(e as Error).message}`);
        }
      }
      return this.value;
    }
  }
  let globalFile: RateFile | null = null;
  let connFile: RateFile | null = null;

  const bits = (key: string, value: string): number => {
    let v: number;
    try {
      v = parseSize(value);
    } catch (e) {
      throw new Error(`rate: ${key}: ${(e as Error).message}`);
    }
    if (v === 0) throw new Error(`rate: ${key} cannot be set to 0`);
    return v;
  };

  async function through(bucket: Bucket, file: RateFile | null, count: number): Promise<void> {
    if (file) {
      const r = file.current();
      if (r !== null && r !== bucket.rate) bucket.adjust(r);
    }
    const wait = bucket.take(count * 8);
    if (wait > 0) await sleepMs(wait);
  }

  const f: Filter<RateHandle> = {
    name: "rate",
    version: "1.0.0",
    longname: "nbdstate rate filter",
    description: "Limit the bandwidth of the server or of each connection.",
    configHelp:
      "rate=BITSPERSEC                Limit total bandwidth.\n" +
      "connection-rate=BITSPERSEC     Limit per-connection bandwidth.\n" +
      "rate-file=FILENAME             Dynamically adjust total bandwidth.\n" +
      "connection-rate-file=FILENAME  Dynamically adjust per-connection bandwidth.\n" +
      "burstiness=SECS                Bucket capacity in seconds (default 2.0).",

    config(next, key, value) {
      switch (key) {
        case "rate":
          if (rate > 0) throw new Error("rate: rate set twice on the command line");
          rate = bits(key, value);
          return;
        case "connection-rate":
          if (connectionRate > 0) throw new Error("rate: connection-rate set twice on the command line");
          connectionRate = bits(key, value);
          return;
        case "rate-file":
          rateFile = resolve(value);
          return;
        case "connection-rate-file":
          connectionRateFile = resolve(value);
          return;
        case "burstiness": {
          const v = /^\s*[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?\s*$/.test(value) ? Number(value) : NaN;
          if (!Number.isFinite(v) || v < 0) throw new Error(`rate: burstiness must be a floating point number (seconds): '${value}'`);
          burstiness = v;
          return;
        }
        default:
          return next(key, value);
      }
    },

    configComplete(next) {
      globalFile = rateFile ? new RateFile(rateFile) : null;
      connFile = connectionRateFile ? new RateFile(connectionRateFile) : null;
      // Neither a rate nor a file: the filter is off, requests pass straight through.
      if (rate > 0 || connectionRate > 0 || globalFile || connFile) {
        f.open = async (a) => {
          await a.next();
          return { read: new Bucket(connectionRate, burstiness), write: new Bucket(connectionRate, burstiness) };
        };
        f.pread = async (n, h, buf, off, fl) => {
          await through(globalRead, globalFile, buf.length);
          await through(h.read, connFile, buf.length);
          return n.pread(buf, off, fl);
        };
        f.preadSparse = async (n, h, buf, off, fl) => {
          await through(globalRead, globalFile, buf.length);
          await through(h.read, connFile, buf.length);
          return n.preadSparse(buf, off, fl);
        };
        f.pwrite = async (n, h, buf, off, fl) => {
          await through(globalWrite, globalFile, buf.length);
          await through(h.write, connFile, buf.length);
          return n.pwrite(buf, off, fl);
        };
      }
      return next();
    },

    getReady() {
      globalRead = new Bucket(rate, burstiness);
      globalWrite = new Bucket(rate, burstiness);
    },

    afterFork(_lower, services) {
      server = services;
    },
  };
  return f;
}
