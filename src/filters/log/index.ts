// log filter (nbdkit-log-filter): log every transaction to a file
// (logfile=, in nbdkit's format) and/or run a script for each
// (logscript=, with the fields as shell variables).
//
// Each file line is written (synchronously, as nbdkit flushes each one)
// before the request goes on, so the log is complete when a reply is sent.

import { spawn } from "node:child_process";
import { closeSync, openSync, writeSync } from "node:fs";
import { parseBool } from "../../backend/size.js";
import {
  FLAG_FAST_ZERO, FLAG_FUA, FLAG_MAY_TRIM, FLAG_REQ_ONE,
  type Context, type Filter, type ServerServices,
} from "../../backend/types.js";
import { extentsList, fileLine, hex, result, scriptText, shellQuote, type EntryType } from "./format.js";

interface LogHandle {
  connection: number;
  /** The last transaction id on this connection. */
  id: number;
  exportName: string;
  tls: boolean;
}

const CACHE_MODE = { none: 0, emulate: 1, native: 2 } as const;

export default function createFilter(): Filter<LogHandle> {
  let logfile: string | null = null;
  let logscript: string | null = null;
  let append = false;
  let fd: number | null = null;
  let server: ServerServices | null = null;
  let connections = 0;
  let preconnectId = 0;
  let listId = 0;

  function runScript(text: string): Promise<void> {
    return new Promise<void>((resolve) => {
      const child = spawn("/bin/sh", ["-c", text], { stdio: ["ignore", "inherit", "inherit"] });
      child.on("error", (e) => {
        server?.log(`logscript: ${e.message}`);
        resolve();
      });
      child.on("exit", (code, signal) => {
        if (code !== 0) server?.log(`logscript: ${signal ? `killed by signal ${signal}` : `script exited with status ${code}`}`);
        resolve();
      });
    });
  }

  /** Write one entry; returns a promise only when a script has to run. */
  function entry(h: LogHandle | null, id: number, act: string, type: EntryType, fields: string): Promise<void> | void {
    const conn = h ? h.connection : null;
    if (fd !== null) {
      try {
        writeSync(fd, fileLine(conn, id, act, type, fields) + "\n");
      } catch (e) {
        server?.debug(`log: ${logfile}: ${(e as Error).message}`);
      }
    }
    if (logscript !== null) return runScript(scriptText(conn, id, act, type, fields, logscript));
  }

  /** An ENTER entry, the call, and its LEAVE entry ("return=0" or the error). */
  async function logged<T>(h: LogHandle, act: string, fields: string, call: () => Promise<T>, leave?: (v: T) => string): Promise<T> {
    const id = ++h.id;
    await entry(h, id, act, "ENTER", fields);
    let v: T;
    try {
      v = await call();
    } catch (e) {
      await entry(h, id, act, "LEAVE", result(e));
      throw e;
    }
    await entry(h, id, act, "LEAVE", leave ? leave(v) : result());
    return v;
  }

  const f: Filter<LogHandle> = {
    name: "log",
    version: "1.0.0",
    longname: "nbdstate log filter",
    description: "Log all transactions to a file or a script.",
    configHelp:
      "logfile=<FILE>               The file to place the log in.\n" +
      "logappend=<BOOL>             True to append to the log (default false).\n" +
      "logscript=<SCRIPT>           Script to run for logging.",

    config(next, key, value) {
      switch (key) {
        case "logfile":
          logfile = value;
          return;
        case "logscript":
          logscript = value;
          return;
        case "logappend":
          try {
            append = parseBool(value);
          } catch (e) {
            throw new Error(`log: ${key}: ${(e as Error).message}`);
          }
          return;
        default:
          return next(key, value);
      }
    },

    configComplete(next) {
      // Neither a file nor a script: the filter is inactive.
      if (logfile !== null || logscript !== null) Object.assign(f, active);
      return next();
    },
  };

  const active: Partial<Filter<LogHandle>> = {
    async getReady() {
      if (logfile !== null) {
        try {
          fd = openSync(logfile, append ? "a" : "w", 0o666);
        } catch (e) {
          throw new Error(`log: open: ${logfile}: ${(e as Error).message}`);
        }
      }
      // nbdstate serves every connection in one thread, as nbdkit's "parallel" (3).
      await entry(null, 0, "Ready", "PRINT", "thread_model=3");
    },

    afterFork(_lower, services) {
      server = services;
    },

    unload() {
      if (fd !== null) closeSync(fd);
      fd = null;
    },

    async listExports(lower, p) {
      const id = ++listId;
      const act = "ListExports";
      await entry(null, id, act, "ENTER", `readonly=${+p.readonly} tls=${+p.tls}`);
      try {
        const list = await lower.listExports(p);
        await entry(null, id, act, "LEAVE", `exports=(${list.map((e) => shellQuote(e.name)).join(" ")}) return=0`);
        return list;
      } catch (e) {
        await entry(null, id, act, "LEAVE", result(e));
        throw e;
      }
    },

    async preconnect(next, readonly) {
      const id = ++preconnectId;
      await entry(null, id, "Preconnect", "ENTER", `readonly=${+readonly}`);
      try {
        await next(readonly);
      } catch (e) {
        await entry(null, id, "Preconnect", "LEAVE", result(e));
        throw e;
      }
      await entry(null, id, "Preconnect", "LEAVE", result());
    },

    async open(a) {
      await a.next();
      return { connection: ++connections, id: 0, exportName: a.exportName, tls: a.tls };
    },

    async prepare(next: Context, h) {
      const [size, bs, w, fl, rot, t, z, fua, e, c, fz] = await Promise.all([
        next.getSize(), next.blockSize(), next.canWrite(), next.canFlush(), next.isRotational(), next.canTrim(),
        next.canZero(), next.canFua(), next.canExtents(), next.canCache(), next.canFastZero(),
      ]);
      await entry(
        h, 0, "Connect", "PRINT",
        `export=${shellQuote(h.exportName)} tls=${+h.tls} size=${hex(size)} ` +
          `minsize=${hex(bs?.minimum ?? 0)} prefsize=${hex(bs?.preferred ?? 0)} maxsize=${hex(bs?.maximum ?? 0)} ` +
          // zero: nbdkit's NBDKIT_ZERO_NATIVE (2) when zeroing is offered.
          `write=${+w} flush=${+fl} rotational=${+rot} trim=${+t} zero=${z ? 2 : 0} ` +
          `fua=${CACHE_MODE[fua]} extents=${+e} cache=${CACHE_MODE[c]} fast_zero=${+fz}`,
      );
    },

    async finalize(_next, h) {
      await entry(h, 0, "Disconnect", "PRINT", `transactions=${h.id}`);
    },

    pread: (n, h, buf, off, fl) => logged(h, "Read", `offset=${hex(off)} count=${hex(buf.length)}`, () => n.pread(buf, off, fl)),
    preadSparse: (n, h, buf, off, fl) =>
      logged(h, "Read", `offset=${hex(off)} count=${hex(buf.length)}`, () => n.preadSparse(buf, off, fl)),
    pwrite: (n, h, buf, off, fl) =>
      logged(h, "Write", `offset=${hex(off)} count=${hex(buf.length)} fua=${fl & FLAG_FUA ? 1 : 0}`, () => n.pwrite(buf, off, fl)),
    flush: (n, h, fl) => logged(h, "Flush", "", () => n.flush(fl)),
    trim: (n, h, count, off, fl) =>
      logged(h, "Trim", `offset=${hex(off)} count=${hex(count)} fua=${fl & FLAG_FUA ? 1 : 0}`, () => n.trim(count, off, fl)),
    zero: (n, h, count, off, fl) =>
      logged(
        h, "Zero",
        `offset=${hex(off)} count=${hex(count)} trim=${fl & FLAG_MAY_TRIM ? 1 : 0} fua=${fl & FLAG_FUA ? 1 : 0} fast=${fl & FLAG_FAST_ZERO ? 1 : 0}`,
        () => n.zero(count, off, fl),
      ),
    extents: (n, h, count, off, fl) =>
      logged(h, "Extents", `offset=${hex(off)} count=${hex(count)} req_one=${fl & FLAG_REQ_ONE ? 1 : 0}`, () => n.extents(count, off, fl), (ex) =>
        extentsList(off, ex),
      ),
    cache: (n, h, count, off, fl) => logged(h, "Cache", `offset=${hex(off)} count=${hex(count)}`, () => n.cache(count, off, fl)),
  };

  return f;
}
