// Helpers for the suites of the decoding filters (gzip, xz, bzip2, lzip,
// zstd, qcow2dec, luks): a test disk, whole-export copies with nbdcopy,
// parallel random reads from several clients, nbdinfo flags, and seeded
// corrupt inputs served from one server (file dir=DIR) to check that every
// one gives an error, never a crash or a hang.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { expect } from "vitest";
import { NbdClient, openClient } from "../../src/client/index.js";
import { NbdRequestError } from "../../src/client/errors.js";
import { runOk, startServer, type RunningServer } from "../helpers/server.js";
import { copyOut, sha } from "./inside-helpers.js";

/** A seeded PRNG (mulberry32). */
export function prng(seed: number): (n: number) => number {
  let a = seed >>> 0;
  return (n: number) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) % n) >>> 0;
  };
}

/**
 * A disk image that is neither all random nor all zeros: 64 KiB pieces of
 * random bytes, text, zeros and a repeated pattern, in a seeded order.
 */
export function testDisk(size: number, seed = 1): Buffer {
  const rnd = prng(seed);
  const b = Buffer.alloc(size);
  for (let at = 0; at < size; at += 65536) {
    const end = Math.min(size, at + 65536);
    switch (rnd(4)) {
      case 0:
        for (let i = at; i < end; i++) b[i] = rnd(256);
        break;
      case 1: {
        const text = Buffer.from(`sector ${at} of a test disk; the quick brown fox jumps over the lazy dog. `);
        for (let i = at; i < end; i++) b[i] = text[(i - at) % text.length]!;
        break;
      }
      case 2:
        break; // zeros
      default:
        for (let i = at; i < end; i++) b[i] = (i * 7) & 0xff;
    }
  }
  return b;
}

/** Serve `args` and copy the whole export out with nbdcopy. */
export async function serveCopy(args: string[], extents = true): Promise<Buffer> {
  const srv = await startServer(args);
  try {
    return await copyOut(srv, "", extents);
  } finally {
    await srv.stop();
  }
}

/** nbdinfo --json of the default export: the fields that describe the export. */
export async function exportFlags(srv: RunningServer): Promise<Record<string, unknown>> {
  const r = await runOk("nbdinfo", ["--json", srv.uri]);
  const e = (JSON.parse(r.stdout) as { exports: Record<string, unknown>[] }).exports[0]!;
  const keep = ["export-size", "is_read_only", "can_cache", "can_flush", "can_fua", "can_multi_conn", "can_trim", "can_zero", "can_fast_zero", "contexts"];
  return Object.fromEntries(keep.map((k) => [k, e[k]]));
}

/**
 * `clients` connections at once, each reading `reads` random ranges of the
 * export (up to 300 KiB, any alignment) and comparing with `want`.
 */
export async function parallelRandomReads(srv: RunningServer, want: Buffer, clients = 4, reads = 25, seed = 7, exportName = ""): Promise<void> {
  await Promise.all(
    Array.from({ length: clients }, async (_, k) => {
      const rnd = prng(seed + k);
      const c = await openClient({ path: srv.sock, exportName });
      try {
        expect(c.size).toBe(want.length);
        for (let i = 0; i < reads; i++) {
          const off = rnd(want.length);
          const len = 1 + rnd(Math.min(300_000, want.length - off));
          const got = await c.pread(len, off);
          if (!got.equals(want.subarray(off, off + len))) throw new Error(`client ${k}: bytes differ at [${off}, +${len})`);
        }
      } finally {
        await c.disconnect().catch(() => c.destroy());
      }
    }),
  );
}

export interface Mutant {
  name: string;
  data: Buffer;
}

/**
 * `n` seeded damaged copies of `good`: truncations, flipped bytes anywhere,
 * in the first and the last 256 bytes (headers, indexes, trailers) and in
 * `hot` ranges given by the caller, and zeroed runs.
 */
export function mutants(good: Buffer, n: number, seed: number, hot: [number, number][] = []): Mutant[] {
  const rnd = prng(seed);
  const out: Mutant[] = [];
  const ranges: [number, number][] = [[0, Math.min(256, good.length)], [Math.max(0, good.length - 256), good.length], [0, good.length], ...hot];
  for (let i = 0; i < n; i++) {
    let d: Buffer;
    const kind = i % 4;
    if (kind === 0) d = Buffer.from(good.subarray(0, rnd(good.length)));
    else if (kind === 3) {
      d = Buffer.from(good);
      const at = rnd(d.length);
      d.fill(0, at, at + 1 + rnd(64));
    } else {
      d = Buffer.from(good);
      const [from, to] = ranges[rnd(ranges.length)]!;
      const hits = 1 + rnd(8);
      for (let h = 0; h < hits; h++) d[from + rnd(Math.max(1, to - from))] = rnd(256);
    }
    out.push({ name: `case-${String(i).padStart(3, "0")}`, data: d });
  }
  return out;
}

export interface FuzzOutcome {
  openFailed: number;
  readFailed: number;
  served: number;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, rej) => (t = setTimeout(() => rej(new Error(`HANG: ${what} took over ${ms} ms`)), ms)))]).finally(() => clearTimeout(t!));
}

/**
 * Serve every mutant (and `good` as export "good") from one server with
 * `filterArgs` over `file dir=DIR`, open each and read its start, its end
 * and a few ranges. Every failure must be a clean error (an option error at
 * open, or an NBD error reply to a read: EIO), never a hang or a dropped
 * connection; the server must still serve the good file afterwards.
 */
export async function fuzzServe(dir: string, filterArgs: string[], good: Buffer, want: Buffer, cases: Mutant[]): Promise<FuzzOutcome> {
  writeFileSync(join(dir, "good"), good);
  for (const m of cases) writeFileSync(join(dir, m.name), m.data);
  const srv = await startServer(["-r", ...filterArgs.filter((a) => a.startsWith("--filter")), "file", `dir=${dir}`, ...filterArgs.filter((a) => !a.startsWith("--filter"))]);
  const outcome: FuzzOutcome = { openFailed: 0, readFailed: 0, served: 0 };
  try {
    for (const m of cases) {
      let c: NbdClient;
      try {
        c = await withTimeout(openClient({ path: srv.sock, exportName: m.name }), 10_000, `opening ${m.name}`);
      } catch (err) {
        if ((err as Error).message.startsWith("HANG")) throw err;
        expect((err as Error).message, m.name).not.toMatch(/ECONNRESET|closed|EPIPE/i);
        outcome.openFailed++;
        continue;
      }
      try {
        const size = c.size;
        const rnd = prng(m.data.length);
        const ranges: [number, number][] = [[0, Math.min(size, 262144)], [Math.max(0, size - 65536), size]];
        for (let i = 0; i < 3 && size > 0; i++) {
          const off = rnd(Math.min(size, 2 ** 31));
          ranges.push([off, Math.min(size, off + 65536)]);
        }
        let failed = false;
        for (const [from, to] of ranges) {
          if (to <= from) continue;
          try {
            await withTimeout(c.pread(to - from, from), 10_000, `reading ${m.name} [${from}, ${to})`);
          } catch (err) {
            if ((err as Error).message.startsWith("HANG")) throw err;
            expect(err, `${m.name}: ${(err as Error).message}`).toBeInstanceOf(NbdRequestError);
            expect((err as NbdRequestError).errnoName, m.name).toBe("EIO");
            failed = true;
          }
        }
        if (failed) outcome.readFailed++;
        else outcome.served++;
      } finally {
        await c.disconnect().catch(() => c.destroy());
      }
    }
    expect(srv.exited, `server exited:\n${srv.stderr.slice(-4000)}`).toBe(false);
    expect(sha(await copyOut(srv, "good"))).toBe(sha(want));
  } finally {
    await srv.stop();
  }
  return outcome;
}
