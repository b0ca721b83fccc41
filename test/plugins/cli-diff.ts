// Differential runs of one command line under nbdkit and nbdstate:
// `SERVER -U - ARGS... --run CMD` (CMD sees $uri, $unixsocket), and the
// export flags nbdinfo --json reports, minus what nbdkit 1.32 does not
// send at all (block sizes).
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { NBDSTATE_BIN, run, type RunResult } from "../helpers/server.js";
import { nbdshEnv, PRELUDE } from "../helpers/python.js";
import { PYTHON } from "../helpers/tools.js";

export type Server = "nbdkit" | "nbdstate";
export const SERVERS: Server[] = ["nbdkit", "nbdstate"];

/** SERVER -U - ...args --run cmd, with /usr/bin first on PATH (nbdsh needs Debian's python3). */
export interface UnderOptions {
  cwd?: string;
  timeoutMs?: number;
  /** Listener options instead of -U - (e.g. -p PORT -i 127.0.0.1). */
  listen?: string[];
}

export function runUnder(server: Server, args: string[], cmd: string, opts: UnderOptions = {}): Promise<RunResult> {
  const [bin, ...prefix] = server === "nbdkit" ? ["nbdkit"] : [process.execPath, NBDSTATE_BIN];
  const listen = opts.listen ?? ["-U", "-"];
  return run(bin!, [...prefix, ...listen, ...args, "--run", cmd], { env: nbdshEnv(), cwd: opts.cwd, timeoutMs: opts.timeoutMs ?? 30_000 });
}

/** runUnder, throwing with both outputs unless it exits 0. */
export async function runOkUnder(server: Server, args: string[], cmd: string, opts: UnderOptions = {}): Promise<RunResult> {
  const r = await runUnder(server, args, cmd, opts);
  if (r.code !== 0) {
    throw new Error(`${server} ${args.join(" ")} --run '${cmd}' failed (code ${r.code}):\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  }
  return r;
}

const FLAG_KEYS = [
  "export-size",
  "is_read_only",
  "is_rotational",
  "can_cache",
  "can_df",
  "can_fast_zero",
  "can_flush",
  "can_fua",
  "can_multi_conn",
  "can_trim",
  "can_zero",
  "contexts",
] as const;

/** The export's size and flags from nbdinfo --json, under one server. */
export async function exportFlags(server: Server, args: string[]): Promise<Record<string, unknown>> {
  const r = await runOkUnder(server, args, 'nbdinfo --json "$uri"');
  const e = (JSON.parse(r.stdout) as { exports: Record<string, unknown>[] }).exports[0]!;
  return Object.fromEntries(FLAG_KEYS.map((k) => [k, e[k]]));
}

let scripts = 0;

/**
 * Write PRELUDE + body to a file in dir; returns the command that runs it
 * against the server ($uri), for --run. The script prints OK at the end.
 */
export function pythonCommand(dir: string, body: string): string {
  const file = join(dir, `script-${++scripts}.py`);
  writeFileSync(file, PRELUDE + "\n" + body);
  return `${PYTHON} ${file} "$uri"`;
}
