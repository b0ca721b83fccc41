// Running one script invocation: argv passed as an array (never through a
// shell string), optional bytes on stdin, stdout collected (or copied
// straight into a read buffer), stderr kept for the error message.

import { spawn, spawnSync, type ChildProcess } from "node:child_process";

/** stdout beyond this is an error (a runaway script must not exhaust memory). */
export const MAX_STDOUT = 128 * 1024 * 1024;
/** Only this much of stderr is kept: enough for an errno name and a message. */
const MAX_STDERR = 64 * 1024;

export interface RawResult {
  /** Exit status, or null when the script was killed by a signal or did not start. */
  code: number | null;
  signal: NodeJS.Signals | null;
  /** What the script printed (empty when `into` was given). */
  stdout: Buffer;
  /** Bytes printed on stdout in total (for `into`: how many were offered). */
  stdoutLength: number;
  stderr: string;
  /** The script could not be run (ENOENT, EACCES, ...). */
  spawnError?: NodeJS.ErrnoException;
  /** Writing stdin failed (EPIPE: the script exited without reading it). */
  stdinError?: NodeJS.ErrnoException;
  /** stdout went past MAX_STDOUT (the rest was discarded). */
  overflow: boolean;
}

export interface RunOptions {
  env: NodeJS.ProcessEnv;
  /** Written to the script's stdin, which is then closed; without it stdin is /dev/null. */
  input?: Buffer;
  /** Copy stdout here (pread) instead of collecting it; extra bytes are counted, not kept. */
  into?: Buffer;
}

/** Run `file argv...` once and collect what it did. Never rejects. */
export function runScript(file: string, argv: readonly string[], o: RunOptions): Promise<RawResult> {
  return new Promise((resolve) => start(file, argv, o, resolve, false));
}

function start(file: string, argv: readonly string[], o: RunOptions, resolve: (r: RawResult) => void, viaSh: boolean): void {
  const chunks: Buffer[] = [];
  let length = 0;
  let overflow = false;
  let stderr = "";
  let stdinError: NodeJS.ErrnoException | undefined;
  let child: ChildProcess;
  try {
    // A script without "#!" runs under /bin/sh, as execvp does for nbdkit.
    child = viaSh
      ? spawn("/bin/sh", [file, ...argv], { env: o.env, stdio: [o.input ? "pipe" : "ignore", "pipe", "pipe"] })
      : spawn(file, argv, { env: o.env, stdio: [o.input ? "pipe" : "ignore", "pipe", "pipe"] });
  } catch (e) {
    resolve({ code: null, signal: null, stdout: Buffer.alloc(0), stdoutLength: 0, stderr: "", spawnError: e as NodeJS.ErrnoException, overflow: false });
    return;
  }
  const into = o.into;
  child.stdout!.on("data", (b: Buffer) => {
    if (into) {
      if (length < into.length) b.copy(into, length, 0, Math.min(b.length, into.length - length));
    } else if (length + b.length <= MAX_STDOUT) {
      chunks.push(b);
    } else {
      overflow = true;
    }
    length += b.length;
  });
  child.stderr!.setEncoding("utf8");
  child.stderr!.on("data", (s: string) => {
    if (stderr.length < MAX_STDERR) stderr += s.slice(0, MAX_STDERR - stderr.length);
  });
  if (o.input) {
    child.stdin!.on("error", (e: NodeJS.ErrnoException) => (stdinError ??= e));
    child.stdin!.end(o.input);
  }
  let spawnError: NodeJS.ErrnoException | undefined;
  child.on("error", (e: NodeJS.ErrnoException) => {
    spawnError ??= e;
  });
  child.on("close", (code, signal) => {
    if (spawnError?.code === "ENOEXEC" && !viaSh) return start(file, argv, o, resolve, true);
    const stdout = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
    resolve({ code: spawnError ? null : code, signal, stdout, stdoutLength: length, stderr, spawnError, stdinError, overflow });
  });
}

/** The synchronous form, for dump_plugin (printed by a synchronous callback). */
export function runScriptSync(file: string, argv: readonly string[], env: NodeJS.ProcessEnv): { code: number | null; stdout: string } {
  const r = spawnSync(file, argv, { env, stdio: ["ignore", "pipe", "pipe"], maxBuffer: MAX_STDOUT, encoding: "utf8" });
  return { code: r.error ? null : r.status, stdout: r.stdout ?? "" };
}
