// --log=stderr|syslog|null: where error messages go, as nbdkit's option.
// Debug lines (-v, -D) are not a sink's business: they always go to stderr
// (nbdkit: "Debug messages always go to standard error and are never sent
// to the system log").
//
// syslog is RFC 3164 over the local datagram socket /dev/log (the path may
// be changed with NBDSTATE_SYSLOG_SOCKET, for tests and chroots), facility
// daemon, as glibc's syslog(3) formats it: "<PRI>Mmm dd hh:mm:ss
// nbdstate[PID]: MESSAGE". Node has no unix datagram sockets in core; they
// are made with socket(2)/sendto(2) through koffi (src/sys/unix-dgram.ts),
// non-blocking. Where that cannot be done, or the socket cannot be reached,
// messages go to stderr after one warning, so that an error is never lost
// silently.

import { getSystemErrorMap } from "node:util";
import { UnixDgramSocket } from "../sys/unix-dgram.js";
import { PROGRAM } from "./errors.js";

export type LogLevel = "error" | "warning" | "info" | "debug";
export type LogMode = "stderr" | "syslog" | "null";

export interface LogSink {
  /**
   * One message. `line` is the text that follows "nbdstate: " on stderr,
   * e.g. "error: memory: size: could not parse number".
   */
  write(level: LogLevel, line: string): void;
  /** Release what the sink holds (the syslog socket). Idempotent. */
  close(): void;
}

export const SYSLOG_SOCKET_ENV = "NBDSTATE_SYSLOG_SOCKET";
export const DEFAULT_SYSLOG_SOCKET = "/dev/log";
/** LOG_DAEMON, as nbdkit's openlog. */
const FACILITY_DAEMON = 3;
const SEVERITY: Record<LogLevel, number> = { error: 3, warning: 4, info: 6, debug: 7 };
/** Longer messages are cut (a datagram has a size limit; syslog daemons cut at 1-8 KiB anyway). */
const MAX_MESSAGE = 8192;
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

export function stderrSink(write: (s: string) => void = (s) => void process.stderr.write(s)): LogSink {
  return {
    write: (_level, line) => write(`${PROGRAM}: ${line}\n`),
    close: () => {},
  };
}

export const nullSink: LogSink = { write: () => {}, close: () => {} };

/** RFC 3164's TIMESTAMP: "Mmm dd hh:mm:ss", local time, day padded with a space. */
export function syslogTimestamp(d: Date): string {
  const two = (n: number) => String(n).padStart(2, "0");
  return `${MONTHS[d.getMonth()]} ${String(d.getDate()).padStart(2, " ")} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

/** One syslog datagram, as glibc's syslog(3) sends it to /dev/log. */
export function syslogMessage(level: LogLevel, line: string, pid: number, now: Date = new Date()): Buffer {
  const pri = FACILITY_DAEMON * 8 + SEVERITY[level];
  // One line per message: a newline would end the record early in some daemons.
  const text = line.replace(/[\r\n]+/g, " ");
  const msg = Buffer.from(`<${pri}>${syslogTimestamp(now)} ${PROGRAM}[${pid}]: ${text}`, "utf8");
  return msg.length > MAX_MESSAGE ? msg.subarray(0, MAX_MESSAGE) : msg;
}

interface Dgram {
  /** Sends at once or throws. */
  sendTo(buf: Buffer, dest: string): void;
  close(): void;
}

export interface SyslogOptions {
  socketPath?: string;
  pid?: number;
  /** Where messages go when syslog cannot take them, and the warning (default stderr). */
  fallback?: LogSink;
  /** Makes the datagram socket; default: a UnixDgramSocket. */
  makeSocket?: () => Promise<Dgram>;
}

async function defaultSocket(): Promise<Dgram> {
  return new UnixDgramSocket();
}

/** "No such file or directory" for an errno error, else its message. */
function reason(e: unknown): string {
  const n = (e as NodeJS.ErrnoException | undefined)?.errno;
  const text = typeof n === "number" ? getSystemErrorMap().get(n)?.[1] : undefined;
  if (text) return text.charAt(0).toUpperCase() + text.slice(1);
  return e instanceof Error ? e.message.split("\n")[0]! : String(e);
}

/**
 * The syslog sink. The socket is made before serving (so a missing module
 * is reported at startup) and messages are sent as they come; one that
 * cannot be delivered goes to the fallback, after a single warning.
 */
export async function syslogSink(opts: SyslogOptions = {}): Promise<LogSink> {
  const path = opts.socketPath ?? DEFAULT_SYSLOG_SOCKET;
  const pid = opts.pid ?? process.pid;
  const fallback = opts.fallback ?? stderrSink();
  let warned = false;
  const degrade = (why: string, level: LogLevel, line: string) => {
    if (!warned) {
      warned = true;
      fallback.write("warning", `warning: --log=syslog: ${why}: messages go to stderr instead`);
    }
    fallback.write(level, line);
  };
  let sock: Dgram | undefined;
  try {
    sock = await (opts.makeSocket ?? defaultSocket)();
  } catch (e) {
    const why = `cannot make a unix datagram socket (${e instanceof Error ? e.message.split("\n")[0] : String(e)})`;
    return { write: (level, line) => degrade(why, level, line), close: () => {} };
  }
  let closed = false;
  return {
    write(level, line) {
      if (closed) return fallback.write(level, line);
      const msg = syslogMessage(level, line, pid);
      try {
        sock!.sendTo(msg, path);
      } catch (e) {
        degrade(`${path}: ${reason(e)}`, level, line);
      }
    },
    close() {
      if (closed) return;
      closed = true;
      // Sends are synchronous: nothing is queued behind the close.
      sock!.close();
    },
  };
}

/** The sink for --log=MODE (the syslog socket from NBDSTATE_SYSLOG_SOCKET when set). */
export async function makeLogSink(mode: LogMode, env: NodeJS.ProcessEnv = process.env): Promise<LogSink> {
  if (mode === "null") return nullSink;
  if (mode === "syslog") return syslogSink({ socketPath: env[SYSLOG_SOCKET_ENV] || DEFAULT_SYSLOG_SOCKET });
  return stderrSink();
}
