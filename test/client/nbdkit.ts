// Test helper: run the reference server nbdkit on a temporary unix socket.

import { spawnSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { connect } from "node:net";
import { join } from "node:path";
import { it } from "vitest";

/** True if `cmd` is on PATH. */
export function hasCommand(cmd: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }).status === 0;
}

export const HAVE_NBDKIT = hasCommand("nbdkit");

/**
 * Call at the top of a test file: without nbdkit, warn and (in CI) add a
 * failing test; returns true when the nbdkit tests should be skipped.
 */
export function requireNbdkit(): boolean {
  if (HAVE_NBDKIT) return false;
  const msg = "nbdkit not found: install the Debian package 'nbdkit' to run the client interop tests";
  if (process.env.CI === "true") it("nbdkit is installed (required in CI)", () => { throw new Error(msg); });
  else console.warn(`${msg}; skipping`);
  return true;
}

export interface Nbdkit {
  sock: string;
  proc: ChildProcess;
  stderr: () => string;
  stop(): Promise<void>;
}

function accepts(path: string): Promise<boolean> {
  return new Promise((res) => {
    const c = connect({ path });
    c.once("connect", () => (c.destroy(), res(true)));
    c.once("error", () => res(false));
  });
}

/** Start `nbdkit -U SOCK -f ARGS...` and wait until the socket accepts connections. */
export async function startNbdkit(args: string[]): Promise<Nbdkit> {
  const dir = mkdtempSync(join(tmpdir(), "nbdstate-client-"));
  const sock = join(dir, "nbd.sock");
  const proc = spawn("nbdkit", ["-U", sock, "-f", "--exit-with-parent", ...args], { stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  proc.stderr!.on("data", (d) => (err += d));
  const exited = new Promise<void>((r) => proc.once("exit", () => r()));
  const deadline = Date.now() + 10_000;
  // The socket file appears at bind(), before listen(): wait until it accepts.
  while (!existsSync(sock) || !(await accepts(sock))) {
    if (proc.exitCode !== null || Date.now() > deadline) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`nbdkit ${args.join(" ")} did not start: ${err}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  return {
    sock,
    proc,
    stderr: () => err,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill("SIGTERM");
        // nbdkit waits for open connections on SIGTERM; don't let a test hang on it.
        const t = setTimeout(() => proc.kill("SIGKILL"), 2000);
        await exited;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
