// Process-level hooks of a running server: shutdown signals, the pid file,
// and --exit-with-parent.

import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";

export const SHUTDOWN_SIGNALS: readonly NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGQUIT", "SIGHUP"];

/**
 * Call onSignal on SIGINT/SIGTERM/SIGQUIT/SIGHUP; a second signal while
 * shutting down calls onForce. Returns a function that removes the handlers.
 */
export function onShutdownSignals(onSignal: (sig: NodeJS.Signals) => void, onForce: (sig: NodeJS.Signals) => void): () => void {
  let seen = false;
  const handler = (sig: NodeJS.Signals) => {
    if (seen) return onForce(sig);
    seen = true;
    onSignal(sig);
  };
  for (const s of SHUTDOWN_SIGNALS) process.on(s, handler);
  return () => {
    for (const s of SHUTDOWN_SIGNALS) process.off(s, handler);
  };
}

/** -P: write the pid (once listening); remove() deletes the file again. */
export function writePidfile(path: string, pid = process.pid): { path: string; remove(): void } {
  const abs = resolve(path);
  writeFileSync(abs, `${pid}\n`);
  return {
    path: abs,
    remove: () => {
      try {
        // Only our own pid file: another server may have replaced it.
        if (readFileSync(abs, "utf8").trim() === String(pid)) rmSync(abs, { force: true });
      } catch {
        /* already gone */
      }
    },
  };
}

/** The live parent pid (process.ppid is fixed at startup in Node). */
export function currentPpid(): number | undefined {
  try {
    const stat = readFileSync("/proc/self/stat", "utf8");
    // "pid (comm) state ppid ...": comm may contain spaces and parentheses.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ppid = Number(rest[1]);
    return Number.isInteger(ppid) ? ppid : undefined;
  } catch {
    return undefined;
  }
}

function parentGone(ppid: number): boolean {
  const now = currentPpid();
  if (now !== undefined) return now !== ppid;
  try {
    process.kill(ppid, 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "ESRCH";
  }
}

/** --exit-with-parent: poll every intervalMs; call onGone once. Returns a stop function. */
export function watchParent(onGone: () => void, intervalMs = 1000): () => void {
  const ppid = process.ppid;
  const timer = setInterval(() => {
    if (parentGone(ppid)) {
      clearInterval(timer);
      onGone();
    }
  }, intervalMs);
  timer.unref();
  // Already orphaned when we started (e.g. the parent died during startup).
  if (parentGone(ppid)) {
    clearInterval(timer);
    queueMicrotask(onGone);
  }
  return () => clearInterval(timer);
}
