// The events the exitwhen filter watches for. check() says whether the
// event has happened (once it has, it stays happened).

import { spawn } from "node:child_process";
import { accessSync, closeSync, constants, fstatSync, openSync, readSync } from "node:fs";
import net from "node:net";

export interface ExitEvent {
  readonly what: string;
  check(log: (m: string) => void): boolean | Promise<boolean>;
  /** Start watching in the background (events that can tell at once). */
  watch?(fire: () => void): void;
  close?(): void;
}

export function fileCreated(path: string): ExitEvent {
  return {
    what: `exit-when-file-created: ${path}`,
    check() {
      try {
        accessSync(path, constants.R_OK);
        return true;
      } catch {
        return false;
      }
    },
  };
}

export function fileDeleted(path: string): ExitEvent {
  return {
    what: `exit-when-file-deleted: ${path}`,
    check(log) {
      try {
        accessSync(path, constants.R_OK);
        return false;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === "ENOENT" || code === "ENOTDIR") return true;
        log(`exit-when-file-deleted: access: ${path}: ${(e as Error).message}`);
        return false;
      }
    },
  };
}

/**
 * The read end of a pipe (or socket) inherited as file descriptor `fd`:
 * the event is its other end closing. Node cannot poll for the hang-up
 * without reading, so whatever is written to it is read and discarded.
 */
export function pipeClosed(fd: number): ExitEvent {
  let closed = false;
  let sock: net.Socket | null = null;
  return {
    what: `exit-when-pipe-closed: ${fd}`,
    check: () => closed,
    watch(fire) {
      sock = new net.Socket({ fd, readable: true, writable: false });
      const done = () => {
        if (closed) return;
        closed = true;
        fire();
      };
      sock.on("data", () => {});
      sock.on("end", done);
      sock.on("close", done);
      sock.on("error", done);
      sock.unref();
    },
    close() {
      sock?.destroy();
    },
  };
}

/** Check at config time that `fd` is open (nbdkit fails on a bad descriptor too). */
export function checkFd(key: string, fd: number): void {
  try {
    fstatSync(fd);
  } catch {
    throw new Error(`exitwhen: ${key}: invalid file descriptor ${fd}`);
  }
}

/**
 * Process `pid` exiting. On Linux /proc/PID/stat is opened now and read
 * on each check: a read failing with ESRCH means that very process is
 * gone, even if its pid has been reused since.
 */
export function processExits(key: string, pid: number): ExitEvent {
  let fd: number | null = null;
  if (process.platform === "linux") {
    try {
      fd = openSync(`/proc/${pid}/stat`, "r");
    } catch (e) {
      throw new Error(`exitwhen: ${key}: /proc/${pid}/stat: ${(e as Error).message}`);
    }
  }
  let gone = false;
  const buf = Buffer.alloc(1);
  return {
    what: `exit-when-process-exits: ${pid}`,
    check(log) {
      if (gone) return true;
      if (fd !== null) {
        try {
          readSync(fd, buf, 0, 1, 0);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === "ESRCH") gone = true;
          else log(`exit-when-process-exits: read: ${(e as Error).message}`);
        }
      } else {
        try {
          process.kill(pid, 0);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === "ESRCH") gone = true;
        }
      }
      return gone;
    },
    close() {
      if (fd !== null) closeSync(fd);
      fd = null;
    },
  };
}

/** A script run by /bin/sh: exit status 88 means the event happened. */
export function script(command: string): ExitEvent {
  return {
    what: `exit-when-script: ${command}`,
    check(log) {
      return new Promise<boolean>((resolve) => {
        const child = spawn("/bin/sh", ["-c", command], { stdio: ["ignore", "inherit", "inherit"] });
        child.on("error", (e) => {
          log(`exit-when-script: ${e.message}`);
          resolve(false);
        });
        child.on("exit", (code, signal) => {
          if (code === 88) resolve(true);
          else {
            if (code !== 0) log(`exit-when-script: ${signal ? `killed by signal ${signal}` : `exited with status ${code}`}`);
            resolve(false);
          }
        });
      });
    },
  };
}
