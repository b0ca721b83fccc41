// Helpers for the sh and eval plugin tests: scripts written into temp dirs,
// and the SAME command line served by nbdkit and by nbdstate side by side
// (differential tests), each on its own unix socket.
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { canConnect, makeTmpDir, NBDSTATE_BIN, removeTmpDir, runOk, sleep, unixUri } from "../helpers/server.js";

export type Kind = "nbdkit" | "nbdstate";
export const KINDS: readonly Kind[] = ["nbdkit", "nbdstate"];

/** Write an executable script (body after its #! line). */
export function writeScript(dir: string, name: string, body: string, shebang = "#!/bin/sh"): string {
  const path = join(dir, name);
  writeFileSync(path, `${shebang}\n${body}`);
  chmodSync(path, 0o755);
  return path;
}

export interface Served {
  kind: Kind;
  sock: string;
  uri: string;
  uriFor(name: string): string;
  readonly stderr: string;
  readonly exited: boolean;
  readonly exitCode: number | null;
  /** Resolves when the server exits. */
  readonly exit: Promise<void>;
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
process.on("exit", () => {
  for (const c of live) c.kill("SIGKILL");
});

export interface ServeOptions {
  /** Written to the server's stdin (for `sh -`), which is then closed. */
  input?: string;
  env?: NodeJS.ProcessEnv;
}

/** `KIND -f -U SOCK ...args`, resolved once the socket accepts connections. */
export async function serve(kind: Kind, args: readonly string[], o: ServeOptions = {}): Promise<Served> {
  const dir = makeTmpDir(`sh-${kind}-`);
  const sock = join(dir, "nbd.sock");
  const argv = ["-f", "-U", sock, ...args];
  const child =
    kind === "nbdkit"
      ? spawn("nbdkit", argv, { stdio: [o.input === undefined ? "ignore" : "pipe", "ignore", "pipe"], env: o.env ?? process.env })
      : spawn(process.execPath, [NBDSTATE_BIN, ...argv], { stdio: [o.input === undefined ? "ignore" : "pipe", "ignore", "pipe"], env: o.env ?? process.env });
  live.add(child);
  if (o.input !== undefined) child.stdin!.end(o.input);
  let stderr = "";
  let exited = false;
  let exitCode: number | null = null;
  child.stderr!.setEncoding("utf8");
  child.stderr!.on("data", (s: string) => (stderr += s));
  const exit = new Promise<void>((res) =>
    child.on("exit", (code) => {
      exited = true;
      exitCode = code;
      live.delete(child);
      res();
    }),
  );
  const stop = async () => {
    if (!exited) {
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exit;
      clearTimeout(t);
    }
    removeTmpDir(dir);
  };
  const deadline = Date.now() + 20_000;
  while (!(existsSync(sock) && (await canConnect({ path: sock })))) {
    if (exited || Date.now() > deadline) {
      await stop();
      throw new Error(`${kind} ${args.join(" ")} did not start:\n${stderr}`);
    }
    await sleep(20);
  }
  return {
    kind,
    sock,
    uri: unixUri(sock),
    uriFor: (name) => unixUri(sock, name),
    get stderr() {
      return stderr;
    },
    get exited() {
      return exited;
    },
    get exitCode() {
      return exitCode;
    },
    exit,
    stop,
  };
}

/** The same command line under nbdkit and nbdstate; fn gets each server in turn (stopped after). */
export async function each<T>(args: readonly string[], fn: (s: Served) => Promise<T>, o: ServeOptions = {}): Promise<Record<Kind, T>> {
  const out: Partial<Record<Kind, T>> = {};
  for (const kind of KINDS) {
    const s = await serve(kind, args, o);
    try {
      out[kind] = await fn(s);
    } finally {
      await s.stop();
    }
  }
  return out as Record<Kind, T>;
}

/** What nbdinfo --json says of an export that both servers must agree on. */
export async function flags(uri: string): Promise<Record<string, unknown>> {
  const j = JSON.parse((await runOk("nbdinfo", ["--json", uri])).stdout) as { exports: Array<Record<string, unknown>> };
  const e = { ...j.exports[0]! };
  delete e.uri; // it names the socket
  return e;
}

/**
 * flags() without the block size fields: nbdkit omits them when the plugin
 * gives none, nbdstate's core always sends them (not the plugin's choice).
 */
export async function flagsNoBlockSize(uri: string): Promise<Record<string, unknown>> {
  const e = await flags(uri);
  delete e.block_size_minimum;
  delete e.block_size_preferred;
  delete e.block_size_maximum;
  return e;
}

export { makeTmpDir, removeTmpDir };
