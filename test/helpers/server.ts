// Spawning the server under test (nbdstate, or nbdkit with the same command
// line) and running commands with timeouts.
//
//   NBDSTATE_TEST_SERVER=nbdkit   run the suites against nbdkit (reference)
//   (unset or "nbdstate")         run them against `node bin/nbdstate.js`
import { spawn, type ChildProcess, type SpawnOptions } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, connect } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export type ServerKind = "nbdstate" | "nbdkit";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const NBDSTATE_BIN = join(REPO_ROOT, "bin", "nbdstate.js");

export function serverKind(): ServerKind {
  const v = (process.env.NBDSTATE_TEST_SERVER ?? "nbdstate").trim().toLowerCase();
  if (v === "" || v === "nbdstate") return "nbdstate";
  if (v === "nbdkit") return "nbdkit";
  throw new Error(`NBDSTATE_TEST_SERVER must be "nbdstate" or "nbdkit", not ${JSON.stringify(v)}`);
}

/** True when the suites run against the reference nbdkit. */
export const isNbdkit = serverKind() === "nbdkit";
/** True when the suites run against nbdstate: use to skip nbdstate-only behaviour. */
export const isNbdstate = !isNbdkit;
/** Name used in test titles and messages. */
export const SERVER_NAME: ServerKind = serverKind();

/**
 * The argv prefix that runs the server, e.g. ["nbdkit"] or
 * ["/usr/bin/node", "/repo/bin/nbdstate.js"]. Append the command line.
 */
export function serverArgv(): string[] {
  if (isNbdkit) return ["nbdkit"];
  if (!existsSync(NBDSTATE_BIN) || !existsSync(join(REPO_ROOT, "dist"))) {
    throw new Error(
      `${NBDSTATE_BIN} or dist/ does not exist: build nbdstate first (npm run build), ` +
        `or set NBDSTATE_TEST_SERVER=nbdkit to run the suites against nbdkit`,
    );
  }
  // As the bin's shebang runs it.
  return [process.execPath, "--max-semi-space-size=4", NBDSTATE_BIN];
}

// ---------------------------------------------------------------------------
// Running commands

export interface RunResult {
  /** Exit code, or null if killed by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  stdoutBuf: Buffer;
  timedOut: boolean;
}

export interface RunOptions {
  /** Kill (SIGKILL) after this long; default 30 s. */
  timeoutMs?: number;
  /** Written to stdin, then stdin is closed. Without it stdin is /dev/null. */
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /**
   * After the process exits, how long to wait for its stdout/stderr to reach
   * EOF (a daemon it forked may hold them open). Default 2 s.
   */
  drainMs?: number;
}

/** Run a command (no shell) with a timeout, capturing stdout and stderr. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const drainMs = opts.drainMs ?? 2_000;
  return new Promise((resolvePromise, reject) => {
    const spawnOpts: SpawnOptions = {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: [opts.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
    };
    let child: ChildProcess;
    try {
      child = spawn(cmd, [...args], spawnOpts);
    } catch (e) {
      reject(e);
      return;
    }
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    let settled = false;
    child.stdout!.on("data", (b: Buffer) => out.push(b));
    child.stderr!.on("data", (b: Buffer) => err.push(b));
    if (opts.input !== undefined) {
      child.stdin!.on("error", () => {
        /* EPIPE if the command exits without reading */
      });
      child.stdin!.end(opts.input);
    }
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, timeoutMs);
    const finish = (code: number | null, signal: NodeJS.Signals | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(drainTimer);
      const stdoutBuf = Buffer.concat(out);
      resolvePromise({
        code,
        signal,
        stdout: stdoutBuf.toString("utf8"),
        stderr: Buffer.concat(err).toString("utf8"),
        stdoutBuf,
        timedOut,
      });
    };
    let drainTimer: NodeJS.Timeout | undefined;
    child.on("error", (e) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(e);
    });
    child.on("exit", (code, signal) => {
      // Wait for the pipes to close, but not forever: a forked daemon
      // may keep them open.
      drainTimer = setTimeout(() => {
        child.stdout?.destroy();
        child.stderr?.destroy();
        finish(code, signal);
      }, drainMs);
    });
    child.on("close", (code, signal) => finish(code, signal));
  });
}

/** run(), but throw (with stderr) unless the command exits 0. */
export async function runOk(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    throw new Error(
      `${cmd} ${args.join(" ")} failed (code ${r.code}, signal ${r.signal}${r.timedOut ? ", timed out" : ""}):\n` +
        `stdout: ${r.stdout.slice(0, 4000)}\nstderr: ${r.stderr.slice(0, 4000)}`,
    );
  }
  return r;
}

/** Run the server's command line (nbdstate or nbdkit) and capture the result. */
export function runCli(args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const [cmd, ...prefix] = serverArgv();
  return run(cmd!, [...prefix, ...args], opts);
}

// ---------------------------------------------------------------------------
// Temporary directories and ports

const tmpDirs = new Set<string>();

/** A fresh directory under the system temp dir (short path: unix sockets). */
export function makeTmpDir(prefix = "nbdstate-test-"): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tmpDirs.add(dir);
  return dir;
}

export function removeTmpDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  tmpDirs.delete(dir);
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.on("error", rej);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => res(port));
    });
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Resolves true once something accepts a connection at `path` (unix) or port. */
export function canConnect(target: { path: string } | { host: string; port: number }): Promise<boolean> {
  return new Promise((res) => {
    const s = connect(target as never);
    const done = (ok: boolean) => {
      s.removeAllListeners();
      s.on("error", () => {});
      s.destroy();
      res(ok);
    };
    s.once("connect", () => done(true));
    s.once("error", () => done(false));
    s.setTimeout(2000, () => done(false));
  });
}

// ---------------------------------------------------------------------------
// A running server on a private unix socket

export interface StartOptions {
  /** Give up waiting for the socket after this long; default 20 s. */
  startTimeoutMs?: number;
  /** On stop(), SIGKILL if SIGTERM has not ended it by then; default 10 s. */
  stopTimeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  /** Export name to put in `uri`; default none (the default export). */
  exportName?: string;
}

export interface StopResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** True if SIGTERM did not end it and it had to be SIGKILLed. */
  killed: boolean;
}

export interface RunningServer {
  /** Path of the unix socket ("" for a TCP server). */
  sock: string;
  /** TCP port (startTcpServer only). */
  port: number | undefined;
  /** The server's private temp dir (holds the socket; removed on stop). */
  dir: string;
  /** nbd+unix:///[export]?socket=SOCK, or nbd://127.0.0.1:PORT/[export] */
  uri: string;
  /** URI of a named export on this server. */
  uriFor(exportName: string): string;
  pid: number;
  /** Everything the server wrote to stderr so far. */
  readonly stderr: string;
  readonly stdout: string;
  /** Whether the server process has exited (e.g. crashed). */
  readonly exited: boolean;
  readonly exitCode: number | null;
  readonly exitSignal: NodeJS.Signals | null;
  /** SIGTERM, wait, SIGKILL after a timeout, remove the temp dir. Idempotent. */
  stop(): Promise<StopResult>;
}

export function unixUri(sock: string, exportName = ""): string {
  const name = exportName === "" ? "" : encodeURIComponent(exportName);
  return `nbd+unix:///${name}?socket=${sock}`;
}

const live = new Set<ChildProcess>();
process.on("exit", () => {
  for (const c of live) {
    try {
      c.kill("SIGKILL");
    } catch {
      /* already gone */
    }
  }
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});

/**
 * Start the server in the foreground on a private unix socket:
 * `SERVER -f -U <tmpdir>/nbd.sock ...args`, and wait until the socket accepts
 * connections. Rejects (with the server's stderr) if it exits first or does
 * not listen in time.
 */
export async function startServer(args: readonly string[], opts: StartOptions = {}): Promise<RunningServer> {
  const dir = makeTmpDir();
  const sock = join(dir, "nbd.sock");
  return launch(["-f", "-U", sock, ...args], args, { path: sock }, dir, opts, {
    sock,
    port: undefined,
    uri: unixUri(sock, opts.exportName ?? ""),
    uriFor: (name: string) => unixUri(sock, name),
  });
}

/**
 * Start the server in the foreground on TCP, loopback only:
 * `SERVER -f -p PORT -i 127.0.0.1 ...args` with a free port.
 */
export async function startTcpServer(args: readonly string[], opts: StartOptions = {}): Promise<RunningServer> {
  const dir = makeTmpDir();
  const port = await freePort();
  const tcpUri = (name: string) => `nbd://127.0.0.1:${port}/${encodeURIComponent(name)}`;
  return launch(["-f", "-p", String(port), "-i", "127.0.0.1", ...args], args, { host: "127.0.0.1", port }, dir, opts, {
    sock: "",
    port,
    uri: tcpUri(opts.exportName ?? ""),
    uriFor: tcpUri,
  });
}

async function launch(
  fullArgs: readonly string[],
  args: readonly string[],
  ready: { path: string } | { host: string; port: number },
  dir: string,
  opts: StartOptions,
  where: Pick<RunningServer, "sock" | "port" | "uri" | "uriFor">,
): Promise<RunningServer> {
  const [cmd, ...prefix] = serverArgv();
  const child = spawn(cmd!, [...prefix, ...fullArgs], {
    env: opts.env ?? process.env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  live.add(child);
  let stderr = "";
  let stdout = "";
  let exited = false;
  let exitCode: number | null = null;
  let exitSignal: NodeJS.Signals | null = null;
  let spawnError: Error | undefined;
  child.stderr!.setEncoding("utf8");
  child.stdout!.setEncoding("utf8");
  child.stderr!.on("data", (s: string) => (stderr += s));
  child.stdout!.on("data", (s: string) => (stdout += s));
  const exitPromise = new Promise<void>((res) => {
    child.on("exit", (code, signal) => {
      exited = true;
      exitCode = code;
      exitSignal = signal;
      live.delete(child);
      res();
    });
    child.on("error", (e) => {
      spawnError = e;
      exited = true;
      live.delete(child);
      res();
    });
  });

  let stopping: Promise<StopResult> | undefined;
  const stop = (): Promise<StopResult> => {
    stopping ??= (async () => {
      let killed = false;
      if (!exited) {
        child.kill("SIGTERM");
        const t = setTimeout(() => {
          killed = true;
          child.kill("SIGKILL");
        }, opts.stopTimeoutMs ?? 10_000);
        await exitPromise;
        clearTimeout(t);
      }
      removeTmpDir(dir);
      return { code: exitCode, signal: exitSignal, killed };
    })();
    return stopping;
  };

  const describeFailure = (why: string) =>
    new Error(
      `${SERVER_NAME} ${args.join(" ")}: ${why}` +
        (spawnError ? `\nspawn error: ${spawnError.message}` : "") +
        `\nexit code: ${exitCode}, signal: ${exitSignal}\nstderr:\n${stderr}\nstdout:\n${stdout}`,
    );

  const deadline = Date.now() + (opts.startTimeoutMs ?? 20_000);
  for (;;) {
    if (exited) {
      await stop();
      throw describeFailure("exited before listening");
    }
    if (("port" in ready || existsSync(ready.path)) && (await canConnect(ready))) break;
    if (Date.now() > deadline) {
      await stop();
      throw describeFailure("timed out waiting for the socket to accept connections");
    }
    await sleep(25);
  }

  return {
    ...where,
    dir,
    pid: child.pid!,
    get stderr() {
      return stderr;
    },
    get stdout() {
      return stdout;
    },
    get exited() {
      return exited;
    },
    get exitCode() {
      return exitCode;
    },
    get exitSignal() {
      return exitSignal;
    },
    stop,
  };
}

/** Poll `pred` every `intervalMs` until it is true or `timeoutMs` passes. */
export async function waitFor(pred: () => boolean | Promise<boolean>, timeoutMs = 10_000, intervalMs = 25): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await pred()) return true;
    if (Date.now() > deadline) return false;
    await sleep(intervalMs);
  }
}

/** Whether a process with this pid exists (signal 0). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Whether `pid` is gone: no such process, or a zombie nobody reaped yet. */
export function pidGone(pid: number): boolean {
  if (!pidAlive(pid)) return true;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // pid (comm) STATE ...; comm may contain spaces and parentheses
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state === "Z" || state === "X";
  } catch {
    return true;
  }
}
