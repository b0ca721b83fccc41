// Differential runs for the policy filters: the same command line under
// nbdkit and nbdstate, then the same nbdinfo --json and the same list of
// requests (test/filters/policy-probe.py) against each, so a test can
// compare flags, sizes, errors and bytes.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { expect } from "vitest";
import { canConnect, makeTmpDir, NBDSTATE_BIN, removeTmpDir, run, sleep } from "../helpers/server.js";
import { PYTHON } from "../helpers/tools.js";

export type Kind = "nbdkit" | "nbdstate";
export const KINDS: readonly Kind[] = ["nbdkit", "nbdstate"];

const PROBE = fileURLToPath(new URL("./policy-probe.py", import.meta.url));

/** One request for the probe (see policy-probe.py). */
export type Op = [string, ...unknown[]];

export interface Case {
  /** --filter=NAME for each, outermost first. */
  filters: string[];
  /** Plugin and its arguments; "$DIR" is replaced by a directory private to each server. */
  plugin: string[];
  /** Filter parameters (after the plugin's). */
  params?: string[];
  /** Files to create in each server's $DIR before it starts. */
  files?: Record<string, Buffer>;
  /** Server options before everything else (e.g. ["-r"]). */
  options?: string[];
}

export interface Outcome {
  /** null when the server listened; else why it did not. */
  startError: string | null;
  /** nbdinfo --json's export (without its uri), or null if nbdinfo failed. */
  info: Record<string, unknown> | null;
  /** policy-probe.py's answer. */
  probe: { size?: number; ops?: unknown[]; connect?: string } | null;
  stderr: string;
}

interface Side {
  sock: string;
  dir: string;
  child: ChildProcess;
  stderr: () => string;
  startError: string | null;
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
process.on("exit", () => {
  for (const c of live) c.kill("SIGKILL");
});

function commandLine(c: Case, dir: string): string[] {
  const sub = (a: string) => a.split("$DIR").join(dir);
  return [...(c.options ?? []), ...c.filters.map((f) => `--filter=${f}`), ...c.plugin.map(sub), ...(c.params ?? []).map(sub)];
}

async function start(kind: Kind, c: Case, root: string): Promise<Side> {
  const dir = join(root, kind);
  mkdirSync(dir, { recursive: true });
  for (const [name, data] of Object.entries(c.files ?? {})) writeFileSync(join(dir, name), data);
  const sock = join(dir, "s");
  const argv = ["-f", "-U", sock, ...commandLine(c, dir)];
  const child = kind === "nbdkit" ? spawn("nbdkit", argv, { stdio: ["ignore", "ignore", "pipe"] })
    : spawn(process.execPath, [NBDSTATE_BIN, ...argv], { stdio: ["ignore", "ignore", "pipe"] });
  live.add(child);
  let stderr = "";
  let exited = false;
  child.stderr!.setEncoding("utf8");
  child.stderr!.on("data", (s: string) => (stderr += s));
  const exit = new Promise<void>((r) => child.on("exit", () => ((exited = true), live.delete(child), r())));
  child.on("error", (e) => (stderr += String(e)));
  let startError: string | null = null;
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (exited) {
      startError = stderr.trim() || "exited";
      break;
    }
    if (await canConnect({ path: sock })) break;
    if (Date.now() > deadline) {
      startError = "timed out";
      break;
    }
    await sleep(20);
  }
  return {
    sock,
    dir,
    child,
    stderr: () => stderr,
    startError,
    async stop() {
      if (!exited) {
        child.kill("SIGTERM");
        const t = setTimeout(() => child.kill("SIGKILL"), 5000);
        await exit;
        clearTimeout(t);
      }
    },
  };
}

export function uriOf(sock: string, exportName = ""): string {
  return `nbd+unix:///${encodeURIComponent(exportName)}?socket=${sock}`;
}

async function nbdinfo(uri: string): Promise<Record<string, unknown> | null> {
  const r = await run("nbdinfo", ["--json", uri], { timeoutMs: 20_000 });
  if (r.code !== 0) return null;
  const e = (JSON.parse(r.stdout) as { exports: Record<string, unknown>[] }).exports[0]!;
  delete e.uri;
  return e;
}

async function probe(uri: string, ops: Op[]): Promise<Outcome["probe"]> {
  const r = await run(PYTHON, [PROBE, uri, JSON.stringify(ops)], { timeoutMs: 30_000 });
  if (r.code !== 0) throw new Error(`policy-probe.py failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  return JSON.parse(r.stdout) as Outcome["probe"];
}

/**
 * Start the case under both servers, run nbdinfo --json and then the
 * requests against each, stop them. `during` runs with both up, given the
 * socket of each (for tests that drive clients of their own).
 */
export async function runBoth(
  c: Case, ops: Op[] = [], during?: (sock: string, kind: Kind) => Promise<unknown>,
): Promise<Record<Kind, Outcome> & { extra: Partial<Record<Kind, unknown>> }> {
  const root = makeTmpDir("nbdstate-policy-");
  const sides = await Promise.all(KINDS.map((k) => start(k, c, root)));
  const extra: Partial<Record<Kind, unknown>> = {};
  try {
    const outcomes = await Promise.all(
      sides.map(async (s, i): Promise<Outcome> => {
        if (s.startError) return { startError: s.startError, info: null, probe: null, stderr: s.stderr() };
        const uri = uriOf(s.sock);
        const info = await nbdinfo(uri);
        const p = await probe(uri, ops);
        if (during) extra[KINDS[i]!] = await during(s.sock, KINDS[i]!);
        return { startError: null, info, probe: p, stderr: s.stderr() };
      }),
    );
    return { nbdkit: outcomes[0]!, nbdstate: outcomes[1]!, extra };
  } finally {
    await Promise.all(sides.map((s) => s.stop()));
    removeTmpDir(root);
  }
}

const baselines = new Map<string, Promise<Record<Kind, Outcome>>>();

/** nbdinfo of the plugin alone under each server (what the filter is compared against). */
function baseline(c: Case): Promise<Record<Kind, Outcome>> {
  const key = JSON.stringify([c.options ?? [], c.plugin, c.files ? Object.keys(c.files) : []]);
  let b = baselines.get(key);
  if (!b) {
    b = runBoth({ filters: [], plugin: c.plugin, files: c.files, options: c.options });
    baselines.set(key, b);
  }
  return b;
}

/**
 * Run the case under both servers and expect the same: both start or both
 * fail; the same nbdinfo --json flags and sizes; the same replies, errors
 * and bytes for `ops`. A flag where the plugins alone already differ
 * (nbdstate advertises block sizes nbdkit leaves out, say) is compared
 * only if the filter changed it under nbdkit.
 */
export async function expectSame(c: Case, ops: Op[] = []): Promise<Record<Kind, Outcome>> {
  const [r, base] = await Promise.all([runBoth(c, ops), baseline(c)]);
  const what = `${commandLine(c, "$DIR").join(" ")}\nnbdkit stderr: ${r.nbdkit.stderr}\nnbdstate stderr: ${r.nbdstate.stderr}`;
  expect(r.nbdstate.startError === null, `start (nbdkit: ${r.nbdkit.startError ?? "ok"}): ${what}`).toBe(r.nbdkit.startError === null);
  if (r.nbdkit.startError !== null) return r;
  expect(r.nbdstate.info === null, `nbdinfo failed: ${what}`).toBe(r.nbdkit.info === null);
  if (r.nbdkit.info && r.nbdstate.info) {
    const bk = base.nbdkit.info ?? {};
    const bs = base.nbdstate.info ?? {};
    const keys = new Set([...Object.keys(r.nbdkit.info), ...Object.keys(r.nbdstate.info)]);
    for (const k of keys) {
      const kit = r.nbdkit.info[k];
      if (bk[k] !== bs[k] && kit === bk[k]) continue; // a difference of the plugins, untouched by the filter
      expect(r.nbdstate.info[k], `${k}: ${what}`).toEqual(kit);
    }
  }
  expect(r.nbdstate.probe, `requests: ${what}`).toEqual(r.nbdkit.probe);
  return r;
}

/** expectSame, for tests that only need the comparison. */
export async function checkSame(c: Case, ops: Op[] = []): Promise<void> {
  await expectSame(c, ops);
}
