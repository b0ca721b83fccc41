// Helpers for the suites of the filters that see inside their data (tar,
// ext2, partition): real tools build the containers, real clients
// (nbdinfo, nbdcopy, nbdsh) read and write through the server.
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { expect } from "vitest";
import { run, runOk, type RunningServer } from "../helpers/server.js";
import type { Context } from "../../src/backend/types.js";
import { NbdClient } from "../../src/client/index.js";
import { PYTHON, requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";

/** The tools every suite here needs (missing ones skip, or fail under CI). */
export function insideTools(extra: ReadonlyArray<readonly [string, string]> = []): boolean {
  return requireTools([TOOLS.nbdinfo, TOOLS.nbdcopy, ...extra]) && requirePythonLibnbd();
}

export const sha = (b: Buffer): string => createHash("sha256").update(b).digest("hex");

export interface Listed {
  name: string;
  description?: string;
  size: number;
}

/** NBD_OPT_LIST (and the size of each export) with nbdinfo --list --json. */
export async function listExports(srv: RunningServer): Promise<Listed[]> {
  const r = await runOk("nbdinfo", ["--list", "--json", srv.uri], { timeoutMs: 60_000 });
  const j = JSON.parse(r.stdout) as { exports: { "export-name": string; description?: string; "export-size": number }[] };
  return j.exports.map((e) => ({ name: e["export-name"], description: e.description, size: e["export-size"] }));
}

/** The whole export, copied out by nbdcopy (with or without block status). */
export async function copyOut(srv: RunningServer, name: string, extents = true): Promise<Buffer> {
  const out = join(srv.dir, `copy-${randomBytes(6).toString("hex")}`);
  const args = [...(extents ? [] : ["--no-extents"]), srv.uriFor(name), out];
  await runOk("nbdcopy", args, { timeoutMs: 60_000 });
  return readFileSync(out);
}

/** nbdsh (python3-libnbd's shell, run by the distribution's Python). */
const nbdsh = (uri: string, code: string) => run(PYTHON, ["-m", "nbd", "-u", uri, "-c", code], { timeoutMs: 60_000 });

/** Write `data` at `offset` of export `name` with nbdsh, then flush. */
export async function pwrite(srv: RunningServer, name: string, offset: number, data: Buffer): Promise<void> {
  const r = await nbdsh(srv.uriFor(name), `h.pwrite(bytes.fromhex('${data.toString("hex")}'), ${offset}); h.flush()`);
  if (r.code !== 0) throw new Error(`nbdsh pwrite failed: ${r.stderr}`);
}

/** Try to write, expecting a failure; returns nbdsh's stderr. */
export async function pwriteFails(srv: RunningServer, name: string, offset: number, data: Buffer): Promise<string> {
  const r = await nbdsh(srv.uriFor(name), `h.pwrite(bytes.fromhex('${data.toString("hex")}'), ${offset})`);
  expect(r.code, "the write should have failed").not.toBe(0);
  return r.stderr;
}

/** Opening export `name` (NBD_OPT_GO) fails: the server's message. */
export async function openError(srv: RunningServer, name: string): Promise<string> {
  const c = await NbdClient.connect({ path: srv.sock });
  try {
    await c.go(name);
  } catch (err) {
    return (err as Error).message;
  } finally {
    await c.abort().catch(() => c.destroy());
  }
  throw new Error(`opening '${name}' should have failed`);
}

/** NBD_OPT_LIST fails: the server's message. */
export async function listError(srv: RunningServer): Promise<string> {
  const c = await NbdClient.connect({ path: srv.sock });
  try {
    await c.list();
  } catch (err) {
    return (err as Error).message;
  } finally {
    await c.abort().catch(() => c.destroy());
  }
  throw new Error("the listing should have failed");
}

/** The base:allocation map of an export, from nbdinfo --map --json. */
export async function mapOf(srv: RunningServer, name: string): Promise<{ offset: number; length: number; type: number }[]> {
  const r = await runOk("nbdinfo", ["--map", "--json", srv.uriFor(name)]);
  return JSON.parse(r.stdout);
}

/** The server is still up and answering (after a client made it refuse something). */
export async function expectServing(srv: RunningServer, name: string, want: Buffer): Promise<void> {
  expect(srv.exited, `server exited:\n${srv.stderr}`).toBe(false);
  expect(sha(await copyOut(srv, name))).toBe(sha(want));
}

/** Write files under `root`: { "a/b": Buffer } */
export function writeTree(root: string, files: Record<string, Buffer | string>): void {
  for (const [rel, data] of Object.entries(files)) {
    const p = join(root, rel);
    mkdirSync(dirname(p), { recursive: true });
    writeFileSync(p, data);
  }
}

/** Every listed export's content equals `want[name]`, read with and without extents. */
export async function expectContents(srv: RunningServer, want: Record<string, Buffer>): Promise<void> {
  for (const [name, data] of Object.entries(want)) {
    const h = sha(data);
    expect(sha(await copyOut(srv, name, true)), `${name} (nbdcopy)`).toBe(h);
    expect(sha(await copyOut(srv, name, false)), `${name} (nbdcopy --no-extents)`).toBe(h);
  }
}

/** A read-only Context over a buffer (for the parsers, in-process). */
export function bufferContext(b: Buffer): Context {
  return {
    getSize: async () => b.length,
    pread: async (buf: Buffer, off: number) => {
      if (off < 0 || off + buf.length > b.length) throw new Error("read beyond the end");
      b.copy(buf, 0, off, off + buf.length);
    },
  } as unknown as Context;
}

/**
 * `n` damaged versions of `b`, each with `hits` random bytes changed in
 * [from, to): one copy, damaged and restored in turn (seeded, reproducible).
 */
export function* mutations(b: Buffer, n: number, hits: number, from = 0, to = b.length): Generator<Buffer> {
  let seed = 12345;
  const rnd = (m: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) % m);
  const c = Buffer.from(b);
  for (let k = 0; k < n; k++) {
    const at = Array.from({ length: hits }, () => from + rnd(to - from));
    for (const i of at) c[i] = rnd(256);
    yield c;
    for (const i of at) c[i] = b[i]!;
  }
}
