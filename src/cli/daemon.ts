// Background mode (no -f, -s, --run, --exit-with-parent), like nbdkit's
// fork: the parent re-runs this program detached, with the environment
// variable below naming a readiness pipe, and waits on that pipe for one
// line: "listening" (the parent exits 0 and leaves the child serving) or
// "error MESSAGE" (the parent prints "nbdstate: MESSAGE" and exits 1).

import { spawn } from "node:child_process";
import { closeSync, writeSync } from "node:fs";
import type { Readable } from "node:stream";
import { errorLine, errorMessage } from "./errors.js";

export const DAEMON_ENV = "NBDSTATE_DAEMON_CHILD";
const READY_FD = 3;

/** In the child: the readiness pipe's fd, or undefined when not a daemon child. */
export function daemonChildFd(env: NodeJS.ProcessEnv = process.env): number | undefined {
  const v = env[DAEMON_ENV];
  if (v === undefined) return undefined;
  const fd = Number(v);
  return Number.isInteger(fd) && fd > 2 ? fd : undefined;
}

/** The child's side of the readiness pipe (each report is sent at most once). */
export class ReadinessReporter {
  private done = false;
  constructor(private readonly fd: number) {}

  private send(line: string): void {
    if (this.done) return;
    this.done = true;
    try {
      writeSync(this.fd, line + "\n");
    } catch {
      /* the parent is gone: nothing to tell */
    }
    try {
      closeSync(this.fd);
    } catch {
      /* already closed */
    }
  }

  listening(): void {
    this.send("listening");
  }

  error(e: unknown): void {
    this.send("error " + errorMessage(e));
  }
}

/**
 * In the parent: start the detached child and wait for its report.
 * Resolves with the parent's exit status.
 */
export function runDaemonParent(
  argv: readonly string[],
  report: (message: string) => void = (m) => void process.stderr.write(errorLine(m) + "\n"),
): Promise<number> {
  const script = process.argv[1];
  const args = [...process.execArgv, ...(script ? [script] : []), ...argv];
  const child = spawn(process.execPath, args, {
    detached: true,
    stdio: ["ignore", "ignore", "ignore", "pipe"],
    env: { ...process.env, [DAEMON_ENV]: String(READY_FD) },
  });
  const pipe = child.stdio[READY_FD] as Readable;
  return new Promise<number>((resolve) => {
    let buf = "";
    let settled = false;
    const finish = (status: number, message?: string) => {
      if (settled) return;
      settled = true;
      if (message !== undefined) report(message);
      pipe.removeAllListeners("data");
      pipe.destroy();
      child.removeAllListeners("exit");
      child.unref();
      resolve(status);
    };
    pipe.setEncoding("utf8");
    pipe.on("data", (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf("\n");
      if (nl < 0) return;
      const line = buf.slice(0, nl);
      if (line === "listening") finish(0);
      else finish(1, line.startsWith("error ") ? line.slice(6) : `unexpected report from the server: ${line}`);
    });
    pipe.on("error", () => {});
    child.once("error", (e) => finish(1, `could not start the server in the background: ${e.message}`));
    child.once("exit", (code, signal) => {
      // The report may still be in the pipe: give it a moment.
      setTimeout(() => {
        const how = code !== null ? `status ${code}` : `signal ${signal}`;
        finish(1, `the server exited before it was ready (${how})`);
      }, 50);
    });
  });
}
