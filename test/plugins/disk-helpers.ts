// Helpers for the disk-building plugins' suites (split, partitioning,
// tmpdisk, linuxdisk, floppy, iso, ondemand): the same command line served
// by nbdstate and by nbdkit side by side, and the real clients that read
// them (nbdinfo, nbdcopy, nbdsh).
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { canConnect, makeTmpDir, NBDSTATE_BIN, removeTmpDir, run, runOk, sleep, unixUri } from "../helpers/server.js";
import { PYTHON } from "../helpers/tools.js";

export interface Served {
  sock: string;
  dir: string;
  uri: string;
  uriFor(name: string): string;
  readonly stderr: string;
  readonly exited: boolean;
  stop(): Promise<void>;
}

export type Kind = "nbdstate" | "nbdkit";

/** `SERVER -f -U SOCK ARGS...` (nbdstate or nbdkit), resolved once the socket accepts. */
export async function serve(kind: Kind, args: readonly string[], opts: { env?: NodeJS.ProcessEnv } = {}): Promise<Served> {
  const dir = makeTmpDir(`nbdstate-${kind}-`);
  const sock = join(dir, "nbd.sock");
  const argv = kind === "nbdkit" ? ["nbdkit"] : [process.execPath, NBDSTATE_BIN];
  const child = spawn(argv[0]!, [...argv.slice(1), "-f", "-U", sock, ...args], {
    stdio: ["ignore", "ignore", "pipe"],
    env: opts.env ?? process.env,
  });
  let stderr = "";
  let exited = false;
  child.stderr!.setEncoding("utf8");
  child.stderr!.on("data", (s: string) => (stderr += s));
  const exit = new Promise<void>((r) => child.on("exit", () => ((exited = true), r())));
  child.on("error", () => {});
  const stop = async () => {
    if (!exited) {
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exit;
      clearTimeout(t);
    }
    removeTmpDir(dir);
  };
  const deadline = Date.now() + 30_000;
  while (!(existsSync(sock) && (await canConnect({ path: sock })))) {
    if (exited || Date.now() > deadline) {
      await stop();
      throw new Error(`${kind} ${args.join(" ")} did not start:\n${stderr}`);
    }
    await sleep(20);
  }
  return {
    sock, dir, uri: unixUri(sock), uriFor: (n) => unixUri(sock, n), stop,
    get stderr() { return stderr; },
    get exited() { return exited; },
  };
}

/** Run `body` with a server of each kind on the same command line; both are stopped after. */
export async function withBoth<T>(args: readonly string[], body: (ours: Served, theirs: Served) => Promise<T>): Promise<T> {
  const [ours, theirs] = await Promise.all([serve("nbdstate", args), serve("nbdkit", args)]);
  try {
    return await body(ours, theirs);
  } finally {
    await Promise.all([ours.stop(), theirs.stop()]);
  }
}

export async function withServer<T>(args: readonly string[], body: (s: Served) => Promise<T>, kind: Kind = "nbdstate"): Promise<T> {
  const s = await serve(kind, args);
  try {
    return await body(s);
  } finally {
    await s.stop();
  }
}

/** `nbdstate ARGS` run to completion (for startup errors): exit code and stderr. */
export function runNbdstate(args: readonly string[], env?: NodeJS.ProcessEnv) {
  return run(process.execPath, [NBDSTATE_BIN, ...args], { timeoutMs: 30_000, env });
}

/** The fields of `nbdinfo --json` that describe an export's size and flags. */
export const INFO_KEYS = [
  "export-size", "is_read_only", "can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero",
  "can_multi_conn", "can_cache", "is_rotational",
] as const;

export type Info = Record<(typeof INFO_KEYS)[number], unknown>;

/** Size and flags of one export, from nbdinfo --json. */
export async function info(uri: string): Promise<Info> {
  const r = await runOk("nbdinfo", ["--json", uri], { timeoutMs: 30_000 });
  const e = (JSON.parse(r.stdout) as { exports: Record<string, unknown>[] }).exports[0]!;
  return Object.fromEntries(INFO_KEYS.map((k) => [k, e[k]])) as Info;
}

/** The whole export, copied out by nbdcopy into a file in `dir`; returns the file's path. */
export async function copyToFile(uri: string, dir: string): Promise<string> {
  const out = join(dir, `copy-${randomBytes(6).toString("hex")}`);
  await runOk("nbdcopy", [uri, out], { timeoutMs: 60_000 });
  return out;
}

export async function copyOut(uri: string, dir: string): Promise<Buffer> {
  return readFileSync(await copyToFile(uri, dir));
}

/** Run python with libnbd's `h` connected to `uri`; returns stdout. Throws with stderr on failure. */
export async function nbdsh(uri: string, code: string): Promise<string> {
  const r = await run(PYTHON, ["-m", "nbd", "-u", uri, "-c", code], { timeoutMs: 30_000 });
  if (r.code !== 0) throw new Error(`nbdsh failed: ${r.stderr.trim()}`);
  return r.stdout;
}

/** nbdsh code that must fail: its stderr. */
export async function nbdshFails(uri: string, code: string): Promise<string> {
  const r = await run(PYTHON, ["-m", "nbd", "-u", uri, "-c", code], { timeoutMs: 30_000 });
  if (r.code === 0) throw new Error(`nbdsh should have failed: ${code}`);
  return r.stderr;
}

/** A Python bytes literal for `b`. */
export const pyBytes = (b: Buffer) => `bytes.fromhex('${b.toString("hex")}')`;
