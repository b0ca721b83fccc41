// evil filter (seeded, deterministic corruption: counted bit by bit) and
// rate filter (bandwidth measured with real clients, and the same command
// lines under nbdkit).
import { randomBytes } from "node:crypto";
import { readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import createEvil from "../../src/filters/evil/index.js";
import createRate from "../../src/filters/rate/index.js";
import { makeTmpDir, removeTmpDir, run, runOk } from "../helpers/server.js";
import { eachKind, haveClients, isNbdkit, KINDS, launch, py, PY_TIMER, type Server } from "./fault-helpers.js";

const tmp = makeTmpDir("nbdstate-evil-");
afterAll(() => removeTmpDir(tmp));

/** The pattern plugin's bytes: each 8-byte big-endian word is its offset. */
function pattern(offset: number, length: number): Buffer {
  const start = offset - (offset % 8);
  const b = Buffer.alloc(length + 16);
  for (let i = 0; i * 8 < b.length; i++) b.writeBigUInt64BE(BigInt(start + i * 8), i * 8);
  return b.subarray(offset - start, offset - start + length);
}

const POP = Uint8Array.from({ length: 256 }, (_, i) => [...i.toString(2)].filter((c) => c === "1").length);
/** Bits that differ. */
const bitDiff = (a: Buffer, b: Buffer) => a.reduce((n, x, i) => n + POP[x ^ b[i]!]!, 0);
/** Positions (bit numbers) that differ. */
function diffBits(a: Buffer, b: Buffer): Set<number> {
  const s = new Set<number>();
  for (let i = 0; i < a.length; i++) {
    const x = a[i]! ^ b[i]!;
    for (let k = 0; x && k < 8; k++) if (x & (1 << k)) s.add(i * 8 + k);
  }
  return s;
}

let copies = 0;
/** The whole export copied out by nbdcopy. */
async function copyAll(s: Server): Promise<Buffer> {
  const out = join(tmp, `copy-${copies++}.img`);
  await runOk("nbdcopy", [s.uri, out]);
  const b = readFileSync(out);
  rmSync(out);
  return b;
}

/** Reads with python3-libnbd: [[length, offset], ...] -> the bytes, concatenated. */
async function reads(s: Server, ranges: [number, number][]): Promise<Buffer> {
  const hex = await py<string>(String.raw`
import json
h = connect()
print(json.dumps("".join(h.pread(n, o).hex() for n, o in json.loads(EXTRA[0]))))
print("OK")
`, s.uri, [JSON.stringify(ranges)]);
  return Buffer.from(hex, "hex");
}

const MiB = 1 << 20;

describe.skipIf(!haveClients || isNbdkit)("evil filter (nbdkit >= 1.36; not in 1.32.5)", () => {
  it("stuck-bits: the same bits of the disk read stuck on every read, at any offset; the seed decides which", async () => {
    const args = (seed: number) => ["--filter=evil", "pattern", "1M", "evil=stuck-bits", "evil-probability=1e-4", `evil-seed=${seed}`];
    const truth = pattern(0, MiB);
    const s = await launch("nbdstate", args(42));
    let first: Buffer;
    try {
      first = await copyAll(s);
      // 8 Mi bits * 1e-4 = 839 stuck bits, about half of which differ from the truth.
      const n = bitDiff(first, truth);
      expect(n).toBeGreaterThan(320);
      expect(n).toBeLessThan(520);
      expect((await copyAll(s)).equals(first)).toBe(true);
      const part = await reads(s, [[4096, 12345], [100, 999_000]]);
      expect(part.equals(Buffer.concat([first.subarray(12345, 12345 + 4096), first.subarray(999_000, 999_100)]))).toBe(true);
    } finally {
      await s.stop();
    }
    const [same, other] = await Promise.all([launch("nbdstate", args(42)), launch("nbdstate", args(43))]);
    try {
      expect((await copyAll(same)).equals(first)).toBe(true);
      const o = await copyAll(other);
      expect(o.equals(first)).toBe(false);
      expect(bitDiff(o, truth)).toBeGreaterThan(320);
    } finally {
      await Promise.all([same.stop(), other.stop()]);
    }
  });

  it("stuck-wires: the stuck bits sit at the same place of every request, wherever it reads; stuck-bits differs by place", async () => {
    const block = randomBytes(65536);
    const blockFile = join(tmp, "block.bin");
    writeFileSync(blockFile, block);
    const go = async (mode: string) => {
      const s = await launch("nbdstate", ["--filter=evil", "memory", "1M", `evil=${mode}`, "evil-probability=1e-3", "evil-seed=5"]);
      try {
        return await py<string[]>(String.raw`
import json
h = connect()
b = open(EXTRA[0], "rb").read()
h.pwrite(b, 0); h.pwrite(b, 131072)
print(json.dumps([h.pread(65536, 0).hex(), h.pread(65536, 131072).hex()]))
print("OK")
`, s.uri, [blockFile]);
      } finally {
        await s.stop();
      }
    };
    const [wires, bits] = await Promise.all([go("stuck-wires"), go("stuck-bits")]);
    const [w0, w1] = wires.map((h) => Buffer.from(h, "hex")) as [Buffer, Buffer];
    expect(w0.equals(w1)).toBe(true);
    expect(bitDiff(w0, block)).toBeGreaterThan(150); // 524 stuck, about half differ
    expect(bitDiff(w0, block)).toBeLessThan(400);
    const [b0, b1] = bits.map((h) => Buffer.from(h, "hex")) as [Buffer, Buffer];
    expect(b0.equals(b1)).toBe(false);
  });

  it("cosmic-rays: each read flips its own random bits (p per bit); the seed makes the run repeat", async () => {
    const args = ["--filter=evil", "pattern", "1M", "evil=cosmic-rays", "evil-probability=1e-3", "evil-seed=9"];
    const truth = pattern(0, 65536);
    const once = async () => {
      const s = await launch("nbdstate", args);
      try {
        return await reads(s, [[65536, 0], [65536, 0]]);
      } finally {
        await s.stop();
      }
    };
    const [a, b] = await Promise.all([once(), once()]);
    expect(a.equals(b)).toBe(true); // same seed, same reads: the same flips
    const r1 = a.subarray(0, 65536);
    const r2 = a.subarray(65536);
    expect(r1.equals(r2)).toBe(false);
    for (const r of [r1, r2]) {
      // 524288 bits * 1e-3 = 524 flips, sd 23
      expect(bitDiff(r, truth)).toBeGreaterThan(420);
      expect(bitDiff(r, truth)).toBeLessThan(630);
    }
  });

  it("evil-stuck-probability=0.5: a stuck bit shows its stuck value on about half the reads, its true value on the others", async () => {
    const block = pattern(0, 65536);
    const go = async (q: string) => {
      const s = await launch("nbdstate", ["--filter=evil", "pattern", "1M", "evil-probability=1e-3", "evil-seed=3", `evil-stuck-probability=${q}`]);
      try {
        return await reads(s, [[65536, 0], [65536, 0]]);
      } finally {
        await s.stop();
      }
    };
    const [always, half] = await Promise.all([go("100%"), go("1:2")]);
    const d1 = diffBits(always.subarray(0, 65536), block);
    const h1 = diffBits(half.subarray(0, 65536), block);
    const h2 = diffBits(half.subarray(65536), block);
    for (const b of [...h1, ...h2]) expect(d1.has(b)).toBe(true);
    expect(h1.size).toBeGreaterThan(d1.size * 0.3);
    expect(h1.size).toBeLessThan(d1.size * 0.7);
    expect([...h1].sort().join()).not.toBe([...h2].sort().join());
  });

  it("writes go down untouched: the file below holds exactly what was written", async () => {
    const file = join(tmp, "evil-file.img");
    writeFileSync(file, Buffer.alloc(MiB));
    const data = randomBytes(MiB);
    writeFileSync(join(tmp, "evil-src.img"), data);
    const s = await launch("nbdstate", ["--filter=evil", "file", file, "evil=cosmic-rays", "evil-probability=1%"]);
    try {
      await runOk("nbdcopy", [join(tmp, "evil-src.img"), s.uri]);
      expect(readFileSync(file).equals(data)).toBe(true);
      expect((await copyAll(s)).equals(data)).toBe(false);
    } finally {
      await s.stop();
    }
  });

  it("a probability of 0 corrupts nothing and adds no callback; bad modes and probabilities are one-line errors", async () => {
    const f = createEvil();
    await f.config!(async () => {}, "evil-probability", "0");
    await f.configComplete!(async () => {});
    expect(f.pread).toBeUndefined();
    for (const bad of ["evil=sideways", "evil-probability=2", "evil-seed=-1"]) {
      const r = await run(process.execPath, ["bin/nbdstate.js", "-f", "-U", join(tmp, "x.sock"), "--filter=evil", "null", "1M", bad]);
      expect(r.code, bad).toBe(1);
      expect(r.stderr.trim().split("\n"), bad).toHaveLength(1);
    }
  });
});

describe.skipIf(!haveClients)("rate filter", () => {
  it("connection-rate= limits reads (after the burst the bucket holds) and leaves writes and zeroes their own budget (both servers)", async () => {
    // 16 Mbit/s = 2 MiB/s; burstiness 0.5 s = a 1 MiB bucket: 3 MiB read = 1 MiB at once + 2 MiB in 1 s.
    const args = ["--filter=rate", "memory", "4M", "connection-rate=16M", "burstiness=0.5"];
    const script = PY_TIMER + String.raw`
h = connect()
def read3():
    for i in range(12):
        h.pread(262144, i * 262144)
r = dict(read=timed(read3), write=timed(h.pwrite, b"w" * 524288, 0), zero=timed(h.zero, 4194304, 0))
print(json.dumps(r))
print("OK")
`;
    const res = await eachKind(args, (s) => py<{ read: number; write: number; zero: number }>(script, s.uri));
    for (const k of KINDS) {
      expect(res[k].read, k).toBeGreaterThanOrEqual(0.95);
      expect(res[k].read, k).toBeLessThan(1.6);
      expect(res[k].write, k).toBeLessThan(0.2);
      expect(res[k].zero, k).toBeLessThan(0.2);
    }
  });

  it("rate= is shared by all connections: two clients reading together take as long as one reading both parts (both servers)", async () => {
    const args = ["--filter=rate", "memory", "4M", "rate=16M", "burstiness=0.5"];
    const script = PY_TIMER + String.raw`
import threading
def reader(base, out):
    h = connect()
    t = time.monotonic()
    for i in range(6):
        h.pread(262144, base + i * 262144)
    out.append(time.monotonic() - t)
out = []
ts = [threading.Thread(target=reader, args=(b, out)) for b in (0, 2097152)]
t = time.monotonic()
for x in ts: x.start()
for x in ts: x.join()
print(json.dumps(dict(total=time.monotonic() - t, each=out)))
print("OK")
`;
    const res = await eachKind(args, (s) => py<{ total: number; each: number[] }>(script, s.uri));
    for (const k of KINDS) {
      expect(res[k].total, k).toBeGreaterThanOrEqual(0.95);
      expect(res[k].total, k).toBeLessThan(1.8);
      expect(Math.max(...res[k].each), k).toBeGreaterThanOrEqual(0.8);
    }
  });

  it("rate-file= is read while the server runs; a deleted file leaves the last rate (both servers)", async () => {
    const res = await eachKind(["--filter=rate", "memory", "2M", "rate=8M", "burstiness=0.1", "rate-file=rate.txt"], async (s) => {
      const file = join(s.dir, "rate.txt"); // relative: from the server's directory
      const set = (v: string | null) => {
        if (v === null) return rmSync(file);
        writeFileSync(`${file}.new`, v + "\n");
        renameSync(`${file}.new`, file); // atomically, as the man page asks
      };
      const timeRead = () =>
        py<number>(PY_TIMER + String.raw`
h = connect()
def r():
    for i in range(8):
        h.pread(131072, i * 131072)
print(json.dumps(timed(r)))
print("OK")
`, s.uri);
      const slow = await timeRead(); // 1 MiB at 1 MiB/s, less the 0.1 MiB bucket
      set("800M");
      await new Promise((r) => setTimeout(r, 250));
      const fast = await timeRead();
      set(null);
      await new Promise((r) => setTimeout(r, 250));
      const stillFast = await timeRead();
      return { slow, fast, stillFast };
    });
    for (const k of KINDS) {
      expect(res[k].slow, k).toBeGreaterThanOrEqual(0.85);
      expect(res[k].slow, k).toBeLessThan(1.5);
      expect(res[k].fast, k).toBeLessThan(0.2);
      expect(res[k].stillFast, k).toBeLessThan(0.2);
    }
  });

  it("nbdstate: a request larger than the bucket waits size / rate, not longer", async () => {
    if (isNbdkit) return; // nbdkit sleeps longer here: its refill is capped at the bucket size while it waits
    const s = await launch("nbdstate", ["--filter=rate", "memory", "4M", "connection-rate=32M", "burstiness=0.1"]);
    try {
      // One 2 MiB read: 16 Mbit at 32 Mbit/s, less the 3.2 Mbit bucket = 0.4 s.
      const t = await py<number>(PY_TIMER + String.raw`
h = connect()
print(json.dumps(timed(h.pread, 2097152, 0)))
print("OK")
`, s.uri);
      expect(t).toBeGreaterThanOrEqual(0.38);
      expect(t).toBeLessThan(0.8);
    } finally {
      await s.stop();
    }
  });

  it.each(KINDS)("%s: rate=0, a rate that is not a size and a bad burstiness are one-line errors", async (k) => {
    for (const bad of ["rate=0", "connection-rate=fast", "burstiness=soon"]) {
      const cmd = k === "nbdkit" || isNbdkit ? ["nbdkit"] : [process.execPath, "bin/nbdstate.js"];
      const r = await run(cmd[0]!, [...cmd.slice(1), "-f", "-U", join(tmp, "r.sock"), "--filter=rate", "null", "1M", bad]);
      expect(r.code, `${k} ${bad}`).toBe(1);
      expect(r.stderr.trim().split("\n"), bad).toHaveLength(1);
    }
  });

  it("with no rate and no rate file the filter adds no callback", async () => {
    const f = createRate();
    await f.configComplete!(async () => {});
    expect([f.open, f.pread, f.preadSparse, f.pwrite]).toEqual([undefined, undefined, undefined, undefined]);
  });
});
