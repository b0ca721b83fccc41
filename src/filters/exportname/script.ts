// Run an exportdesc=script: command for one export name, bounded in time and
// output.

import { spawn } from "node:child_process";

/** The NBD protocol's limit on strings; longer output is truncated. */
export const MAX_DESC_BYTES = 4096;
/** How long a description script may run before it is killed. */
export const SCRIPT_TIMEOUT_MS = 10_000;

/**
 * Run `script` with `sh -c`, with the environment variable $name set to the
 * export name (exported, as nbdkit does), and return its standard output
 * (at most 4096 bytes, one trailing newline removed). Returns null if the
 * script could not be run or did not finish within the time limit. The
 * exit status is ignored, as in nbdkit.
 */
export function runDescScript(
  script: string,
  name: string,
  timeoutMs: number = SCRIPT_TIMEOUT_MS,
): Promise<string | null> {
  // An environment variable cannot hold NUL: such a name gets no description.
  if (name.includes("\0")) return Promise.resolve(null);
  return new Promise((resolvePromise) => {
    let settled = false;
    const chunks: Buffer[] = [];
    let bytes = 0;
    const finish = (v: string | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolvePromise(v);
    };

    let child;
    try {
      child = spawn("sh", ["-c", script], {
        env: { ...process.env, name },
        stdio: ["ignore", "pipe", "inherit"],
        detached: true, // own process group, so a timeout kills all of it
      });
    } catch {
      finish(null);
      return;
    }
    const pid = child.pid;
    const timer = setTimeout(() => {
      if (pid !== undefined) {
        try {
          process.kill(-pid, "SIGKILL");
        } catch {
          // already gone
        }
      }
      finish(null);
    }, timeoutMs);

    child.on("error", () => finish(null));
    child.stdout!.on("data", (d: Buffer) => {
      // Keep reading past the limit (so the script never blocks on a full
      // pipe) but keep only the first MAX_DESC_BYTES.
      if (bytes < MAX_DESC_BYTES) {
        const keep = d.subarray(0, MAX_DESC_BYTES - bytes);
        chunks.push(keep);
        bytes += keep.length;
      }
    });
    child.on("close", () => {
      let out = Buffer.concat(chunks);
      if (out.length > 0 && out[out.length - 1] === 0x0a) out = out.subarray(0, out.length - 1);
      finish(out.toString("utf8"));
    });
  });
}
