// Helpers for the fault, policy and observability filter tests: the same
// command line under nbdstate and nbdkit side by side (differential
// tests), with the exit status, and timed python3-libnbd scripts.
import { spawn, type ChildProcess, type StdioOptions } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { canConnect, isNbdkit, makeTmpDir, NBDSTATE_BIN, removeTmpDir, sleep, unixUri } from "../helpers/server.js";
import { pythonOk } from "../helpers/python.js";
import { hasTool, requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";

export type Kind = "nbdstate" | "nbdkit";

/** python3-libnbd and nbdinfo are needed by every suite; nbdkit for the differential halves. */
export const haveClients = requireTools([TOOLS.nbdinfo, TOOLS.nbdsh]) && requirePythonLibnbd();
export const haveNbdkit = requireTools([TOOLS.nbdkit]);
/** The kinds to run a differential test on (nbdkit only if installed; both are the reference under NBDSTATE_TEST_SERVER=nbdkit). */
export const KINDS: Kind[] = haveNbdkit ? ["nbdstate", "nbdkit"] : ["nbdstate"];
export { isNbdkit };

export interface Server {
  kind: Kind;
  sock: string;
  uri: string;
  dir: string;
  pid: number;
  readonly stderr: string;
  readonly exited: boolean;
  /** Resolves with the exit status when the process ends. */
  readonly exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM (SIGKILL after 10 s), wait, remove the temp dir. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const live = new Set<ChildProcess>();
process.on("exit", () => {
  for (const c of live) c.kill("SIGKILL");
});

function argv(kind: Kind): string[] {
  // Under NBDSTATE_TEST_SERVER=nbdkit the "nbdstate" side is nbdkit too.
  if (kind === "nbdkit" || isNbdkit) return ["nbdkit"];
  return [process.execPath, NBDSTATE_BIN];
}

export interface LaunchOptions {
  cwd?: string;
  stdio?: StdioOptions;
  /** Do not wait for the socket (for servers expected to exit at once). */
  noWait?: boolean;
}

/** `KIND -f -U DIR/nbd.sock ARGS...`, resolved once the socket accepts connections. */
export async function launch(kind: Kind, args: readonly string[], opts: LaunchOptions = {}): Promise<Server & { child: ChildProcess }> {
  const dir = makeTmpDir(`nbdstate-${kind}-`);
  const sock = join(dir, "nbd.sock");
  const [cmd, ...pre] = argv(kind);
  const child = spawn(cmd!, [...pre, "-f", "-U", sock, ...args], {
    cwd: opts.cwd ?? dir,
    stdio: opts.stdio ?? ["ignore", "ignore", "pipe"],
  });
  live.add(child);
  let stderr = "";
  let exited = false;
  child.stderr?.setEncoding("utf8");
  child.stderr?.on("data", (s: string) => (stderr += s));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) =>
    child.on("exit", (code, signal) => {
      exited = true;
      live.delete(child);
      res({ code, signal });
    }),
  );
  child.on("error", () => {});
  const srv = {
    kind, sock, dir, child, pid: child.pid!, exit,
    uri: unixUri(sock),
    get stderr() {
      return stderr;
    },
    get exited() {
      return exited;
    },
    async stop() {
      if (!exited) {
        child.kill("SIGTERM");
        const t = setTimeout(() => child.kill("SIGKILL"), 10_000);
        await exit;
        clearTimeout(t);
      }
      removeTmpDir(dir);
      return exit;
    },
  };
  if (opts.noWait) return srv;
  const deadline = Date.now() + 20_000;
  while (!(existsSync(sock) && (await canConnect({ path: sock })))) {
    if (exited || Date.now() > deadline) {
      await srv.stop();
      throw new Error(`${kind} ${args.join(" ")}: did not start:\n${stderr}`);
    }
    await sleep(20);
  }
  return srv;
}

/** Run fn against the same command line on each kind, in parallel, then stop them. */
export async function eachKind<T>(args: readonly string[], fn: (s: Server) => Promise<T>, kinds = KINDS): Promise<Record<Kind, T>> {
  const out = {} as Record<Kind, T>;
  await Promise.all(
    kinds.map(async (k) => {
      const s = await launch(k, args);
      try {
        out[k] = await fn(s);
      } finally {
        await s.stop();
      }
    }),
  );
  return out;
}

/** Run a python3-libnbd script (PRELUDE helpers) and parse its last JSON line before OK. */
export async function py<T = unknown>(script: string, uri: string, extra: string[] = []): Promise<T> {
  const r = await pythonOk(script, uri, extra, 20_000);
  // The line just before the final OK.
  const lines = r.stdout.trimEnd().split("\n");
  const json = lines[lines.length - 2];
  return (json !== undefined ? JSON.parse(json) : undefined) as T;
}

/** Python: elapsed seconds of a call. */
export const PY_TIMER = String.raw`
import json, time
def timed(fn, *a):
    t = time.monotonic()
    fn(*a)
    return time.monotonic() - t
def errno_of(fn, *a):
    try:
        fn(*a)
        return 0
    except nbd.Error as e:
        return e.errnum
`;

export const hasNbdcopy = () => hasTool("nbdcopy");
