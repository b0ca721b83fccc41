// exitwhen filter (nbdkit-exitwhen-filter): exit gracefully when an event
// happens (a file created or deleted, a pipe closed, a process gone, a
// script saying so). Once it has: new clients are refused, and the server
// exits when the last connected client has gone; while no client is
// connected the events are polled every exit-when-poll seconds.

import { resolve } from "node:path";
import type { Filter, ServerServices } from "../../backend/types.js";
import { GRACE_MS } from "../exitlast/index.js";
import { checkFd, fileCreated, fileDeleted, pipeClosed, processExits, script, type ExitEvent } from "./events.js";

export default function createFilter(): Filter<{ counted: boolean }> {
  const events: ExitEvent[] = [];
  let pollSecs = 60;
  let connections = 0;
  let exiting = false;
  let server: ServerServices | null = null;
  let poller: NodeJS.Timeout | null = null;
  let checking: Promise<boolean> | null = null;

  const log = (m: string) => (server ? server.log(m) : process.stderr.write(`exitwhen: ${m}\n`));

  /** Has any event happened? (Once one has, the answer stays yes.) */
  function check(): Promise<boolean> {
    if (exiting) return Promise.resolve(true);
    checking ??= (async () => {
      for (const e of events) {
        if (await e.check(log)) {
          server?.debug(`exitwhen: detected ${e.what}`);
          exiting = true;
          break;
        }
      }
      return exiting;
    })().finally(() => (checking = null));
    return checking;
  }

  function shutdownIfIdle(): void {
    if (exiting && connections === 0) {
      server?.debug("exitwhen: exiting, no client connected");
      server?.shutdown("exitwhen: the event happened");
    }
  }

  /**
   * After a close: as exitlast, wait a moment first (a client that asked
   * NBD_OPT_INFO may be about to open the export for real).
   */
  function shutdownIfIdleSoon(): void {
    if (!exiting || connections !== 0) return;
    setTimeout(shutdownIfIdle, GRACE_MS);
  }

  const parseUint = (key: string, value: string, max: number): number => {
    const v = value.trim();
    if (!/^[0-9]+$/.test(v) || Number(v) > max) throw new Error(`exitwhen: ${key}: could not parse number: '${value}'`);
    return Number(v);
  };

  const f: Filter<{ counted: boolean }> = {
    name: "exitwhen",
    version: "1.0.0",
    longname: "nbdstate exitwhen filter",
    description: "Exit gracefully when an event occurs.",
    configHelp:
      "exit-when-file-created=FILENAME  Exit when the file is created.\n" +
      "exit-when-file-deleted=FILENAME  Exit when the file is deleted.\n" +
      "exit-when-pipe-closed=FD         Exit when the pipe on FD is closed.\n" +
      "exit-when-process-exits=PID      Exit when process PID exits.\n" +
      "exit-when-script=SCRIPT          Exit when SCRIPT exits with status 88.\n" +
      "exit-when-poll=SECS              Poll interval while idle (default 60).",

    dumpPlugin: () =>
      "exitwhen_file_created=yes\nexitwhen_file_deleted=yes\nexitwhen_process_exits=yes\nexitwhen_pipe_closed=yes\nexitwhen_script=yes",

    config(next, key, value) {
      switch (key) {
        case "exit-when-file-created":
          events.push(fileCreated(resolve(value)));
          return;
        case "exit-when-file-deleted":
          events.push(fileDeleted(resolve(value)));
          return;
        case "exit-when-pipe-closed":
        case "exit-when-fd-closed": {
          const fd = parseUint(key, value, 0x7fffffff);
          checkFd(key, fd);
          events.push(pipeClosed(fd));
          return;
        }
        case "exit-when-process-exits":
        case "exit-when-pid-exits":
          events.push(processExits(key, parseUint(key, value, 0x7fffffff)));
          return;
        case "exit-when-script":
          events.push(script(value));
          return;
        case "exit-when-poll":
          pollSecs = parseUint(key, value, 0xffffffff);
          if (pollSecs === 0) throw new Error(`exitwhen: ${key} cannot be 0`);
          return;
        default:
          return next(key, value);
      }
    },

    configComplete(next) {
      // No events: the filter does nothing at all.
      if (events.length === 0) {
        for (const k of ["getReady", "afterFork", "preconnect", "open", "close", "unload"] as const) delete f[k];
      }
      return next();
    },

    async afterFork(_lower, services) {
      server = services;
      // Already happened: exit at once (the shutdown waits for the server to be up).
      if (await check()) return shutdownIfIdle();
      for (const e of events) {
        e.watch?.(() => {
          exiting = true;
          shutdownIfIdle();
        });
      }
      poller = setInterval(() => {
        if (connections === 0) void check().then(shutdownIfIdle);
      }, pollSecs * 1000);
      poller.unref();
    },

    async preconnect(next, readonly) {
      if (await check()) throw new Error("exitwhen: the server is exiting: rejecting new connection");
      await next(readonly);
    },

    async open(a) {
      await a.next();
      connections++;
      return { counted: true };
    },

    async close(h) {
      if (!h.counted) return;
      await check();
      connections--;
      shutdownIfIdleSoon();
    },

    unload() {
      if (poller) clearInterval(poller);
      for (const e of events) e.close?.();
    },
  };
  return f;
}
