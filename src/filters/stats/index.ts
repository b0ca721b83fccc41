// stats filter (nbdkit-stats-filter): count requests, bytes and time per
// kind of request, with a histogram of request sizes and alignments, and
// write the report to statsfile= when the server exits.

import { closeSync, openSync, writeSync } from "node:fs";
import { resolve } from "node:path";
import { parseBool } from "../../backend/size.js";
import type { Filter } from "../../backend/types.js";
import { OpStats, report } from "./report.js";

export default function createFilter(): Filter {
  let filename: string | null = null;
  let append = false;
  let threshold = 0.95;
  let fd: number | null = null;
  let start = 0n;

  const read = new OpStats("read");
  const write = new OpStats("write");
  const trim = new OpStats("trim");
  const zero = new OpStats("zero");
  const extents = new OpStats("extents");
  const cache = new OpStats("cache");
  const flush = new OpStats("flush");
  const all = [read, write, trim, zero, extents, cache, flush];

  /** Run a request and, if it succeeded, count it (failed requests are not counted). */
  async function timed<T>(st: OpStats, size: number, offset: number, op: () => Promise<T>): Promise<T> {
    const t0 = process.hrtime.bigint();
    const v = await op();
    st.record(size, offset, Number(process.hrtime.bigint() - t0), threshold !== 0);
    return v;
  }

  return {
    name: "stats",
    version: "1.0.0",
    longname: "nbdstate stats filter",
    description: "Display statistics about operations.",
    configHelp:
      "statsfile=<FILE>    (required) The file to place the log in.\n" +
      "statsappend=<BOOL>  True to append to the log (default false).\n" +
      "statsthreshold=<PERCENTILE>  Histogram cut-off, 0 = no histogram (default 95).",

    config(next, key, value) {
      switch (key) {
        case "statsfile":
          filename = resolve(value);
          return;
        case "statsappend":
          try {
            append = parseBool(value);
          } catch (e) {
            throw new Error(`stats: ${key}: ${(e as Error).message}`);
          }
          return;
        case "statsthreshold": {
          const v = value.trim();
          if (!/^[-+]?[0-9]+$/.test(v)) throw new Error(`stats: printing threshold: could not parse number: '${value}'`);
          const n = Number(v);
          if (n < 0 || n > 100) throw new Error("stats: statsthreshold must be between 0 and 100 (percent)");
          threshold = n / 100;
          return;
        }
        default:
          return next(key, value);
      }
    },

    configComplete(next) {
      if (filename === null) throw new Error("stats: stats filter requires statsfile parameter");
      return next();
    },

    getReady() {
      try {
        fd = openSync(filename!, append ? "a" : "w", 0o666);
      } catch (e) {
        throw new Error(`stats: open: ${filename}: ${(e as Error).message}`);
      }
      start = process.hrtime.bigint();
    },

    unload() {
      if (fd === null) return;
      const elapsed = Number(process.hrtime.bigint() - start);
      try {
        if (elapsed >= 1000) writeSync(fd, report(all, elapsed, threshold));
      } finally {
        closeSync(fd);
        fd = null;
      }
    },

    pread: (n, _h, buf, off, fl) => timed(read, buf.length, off, () => n.pread(buf, off, fl)),
    preadSparse: (n, _h, buf, off, fl) => timed(read, buf.length, off, () => n.preadSparse(buf, off, fl)),
    pwrite: (n, _h, buf, off, fl) => timed(write, buf.length, off, () => n.pwrite(buf, off, fl)),
    trim: (n, _h, count, off, fl) => timed(trim, count, off, () => n.trim(count, off, fl)),
    zero: (n, _h, count, off, fl) => timed(zero, count, off, () => n.zero(count, off, fl)),
    extents: (n, _h, count, off, fl) => timed(extents, count, off, () => n.extents(count, off, fl)),
    cache: (n, _h, count, off, fl) => timed(cache, count, off, () => n.cache(count, off, fl)),
    flush: (n, _h, fl) => timed(flush, 0, 0, () => n.flush(fl)),
  };
}
