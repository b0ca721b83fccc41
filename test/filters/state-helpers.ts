// Helpers for the suites of the filters that hold or transform data (cow,
// cache, swab, ...): the same command line under nbdstate and nbdkit side
// by side, their flags and sizes as nbdinfo sees them, the random
// differential script (state-diff.py), and small nbdsh-like scripts.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { expect } from "vitest";
import { pythonOk, runPython } from "../helpers/python.js";
import { makeTmpDir, removeTmpDir, run, runOk, startServer, unixUri, type RunningServer } from "../helpers/server.js";
import { PYTHON, requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";
import { startNbdkitAt, type Upstream } from "../helpers/upstream.js";

export const DIFF_SCRIPT = fileURLToPath(new URL("./state-diff.py", import.meta.url));

/** Tools every suite here needs (missing ones skip, or fail under CI). */
export function stateTools(): boolean {
  return requireTools([TOOLS.nbdinfo, TOOLS.nbdcopy, TOOLS.nbdkit]) && requirePythonLibnbd();
}

export const sha = (b: Buffer): string => createHash("sha256").update(b).digest("hex");

/** nbdkit with a command line, on a private socket. */
export interface Reference {
  uri: string;
  sock: string;
  upstream: Upstream;
  stop(): Promise<void>;
}

export async function startReference(args: readonly string[]): Promise<Reference> {
  const dir = makeTmpDir("nbdkit-ref-");
  const sock = join(dir, "s");
  const upstream = await startNbdkitAt(sock, args);
  return {
    uri: unixUri(sock),
    sock,
    upstream,
    async stop() {
      await upstream.stop();
      removeTmpDir(dir);
    },
  };
}

/** The same command line under nbdstate (ours) and nbdkit (ref). */
export interface Pair {
  ours: RunningServer;
  ref: Reference;
  stop(): Promise<void>;
}

export async function startPair(args: readonly string[]): Promise<Pair> {
  const [ours, ref] = await Promise.all([startServer(args), startReference(args)]);
  return {
    ours,
    ref,
    async stop() {
      await Promise.all([ours.stop(), ref.stop()]);
    },
  };
}

/** What nbdinfo --json says of an export (flags, sizes, block sizes), without names and URIs. */
export async function exportInfo(uri: string): Promise<Record<string, unknown>> {
  const r = await runOk("nbdinfo", ["--json", uri], { timeoutMs: 30_000 });
  const e = (JSON.parse(r.stdout) as { exports: Record<string, unknown>[] }).exports[0]!;
  delete e["export-name"];
  delete e["uri"];
  return e;
}

/**
 * Flags and sizes of both servers, equal. nbdstate always sends block size
 * constraints (its defaults when no layer has any); nbdkit sends none
 * then, so block sizes are compared only when nbdkit sends them.
 */
export async function expectSameInfo(
  pair: Pair,
  exceptions: Record<string, unknown> = {},
  ignore: string[] = [],
): Promise<Record<string, unknown>> {
  const [ours, ref] = await Promise.all([exportInfo(pair.ours.uri), exportInfo(pair.ref.uri)]);
  for (const k of ignore) {
    delete ours[k];
    delete ref[k];
  }
  if (!("block_size_minimum" in ref)) {
    for (const k of ["block_size_minimum", "block_size_preferred", "block_size_maximum"]) delete ours[k];
  }
  expect(ours).toEqual({ ...ref, ...exceptions });
  return ours;
}

/** Run state-diff.py: the same random requests against both servers, every reply and byte compared. */
export async function expectSameReplies(pair: Pair, seed: number, count: number, opts: string[] = []): Promise<void> {
  const r = await run(PYTHON, [DIFF_SCRIPT, pair.ref.uri, pair.ours.uri, String(seed), String(count), ...opts], { timeoutMs: 60_000 });
  expect(r.stdout + r.stderr).toContain(`OK ${count}`);
}

/** A python3-libnbd script against a URI (PRELUDE helpers; must print OK). */
export function py(script: string, uri: string, extra: string[] = []) {
  return pythonOk(script, uri, extra);
}

/** The script's stdout (it need not print OK). */
export async function pyOut(script: string, uri: string, extra: string[] = []): Promise<string> {
  const r = await runPython(script, uri, extra);
  if (r.code !== 0) throw new Error(`python failed: ${r.stderr}`);
  return r.stdout;
}

/** The whole export, read by nbdcopy. */
export async function copyOut(uri: string, dir: string, name = "out.img"): Promise<Buffer> {
  const out = join(dir, name);
  await runOk("nbdcopy", [uri, out], { timeoutMs: 60_000 });
  return readFileSync(out);
}
