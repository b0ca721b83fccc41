// log and stats filters: their files, line by line against nbdkit's for
// the same client session (timestamps and timings aside), the log script's
// variables, and where nbdstate's stats figures are right and nbdkit's not.
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import createLog from "../../src/filters/log/index.js";
import { fixed, humanSize } from "../../src/filters/stats/report.js";
import { makeTmpDir, removeTmpDir, run, runOk, sleep } from "../helpers/server.js";
import { haveClients, isNbdkit, KINDS, launch, py, type Kind, type Server } from "./fault-helpers.js";

const tmp = makeTmpDir("nbdstate-log-");
afterAll(() => removeTmpDir(tmp));

const cli = (k: Kind) => (k === "nbdkit" || isNbdkit ? ["nbdkit"] : [process.execPath, "bin/nbdstate.js"]);
/** Start, run the session, stop (the files are complete once the server has exited), return a file's text. */
async function session(k: Kind, args: string[], file: string, client: (s: Server) => Promise<unknown>): Promise<string> {
  const s = await launch(k, args);
  const path = join(s.dir, file);
  let text = "";
  try {
    await client(s);
  } finally {
    s.child.kill("SIGTERM");
    await s.exit;
    // nbdkit's log scripts can still be running after it exits (its system()
    // calls do not always wait for them): give them a moment.
    if (k === "nbdkit") await sleep(300);
    text = existsSync(path) ? readFileSync(path, "utf8") : "";
    await s.stop();
  }
  return text;
}

const EVERY_REQUEST = String.raw`
h = connect()
h.pwrite(b"x" * 512, 0, nbd.CMD_FLAG_FUA)
h.pread(512, 0)
h.zero(4096, 4096, nbd.CMD_FLAG_NO_HOLE)
h.zero(4096, 65536, nbd.CMD_FLAG_FAST_ZERO)
try:
    h.trim(4096, 8192)
except nbd.Error:
    pass
h.flush()
h.cache(512, 0)
extents(h, 131072, 0)
h.shutdown()
print("OK")
`;

describe.skipIf(!haveClients)("log filter", () => {
  const TS = /^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}) /;

  it("writes nbdkit's lines for the same session: listing, connect, every request, an error, disconnect (both servers)", async () => {
    const args = ["--filter=log", "--filter=error", "memory", "1M", "logfile=log.txt", "error-trim-rate=100%"];
    const logs = {} as Record<Kind, string>;
    await Promise.all(
      KINDS.map(async (k) => {
        logs[k] = await session(k, args, "log.txt", async (s) => {
          await runOk("nbdinfo", ["--list", s.uri]);
          await py(EVERY_REQUEST, s.uri);
        });
      }),
    );
    const strip = (t: string) =>
      t.trimEnd().split("\n").map((l) => {
        const m = TS.exec(l);
        expect(m, l).not.toBeNull();
        const when = Date.parse(m![1]!.replace(" ", "T") + "Z");
        expect(Math.abs(when - Date.now())).toBeLessThan(120_000); // UTC, now
        return l.slice(m![0].length);
      });
    const ours = strip(logs.nbdstate);
    expect(ours).toContain("connection=2 ...Trim id=5 return=-1 error=EIO");
    expect(ours).toContain('connection=2 ...Extents id=8 extents=(0x0 0x8000 "" 0x8000 0x18000 "hole,zero") return=0');
    expect(ours).toContain("connection=2 Zero id=4 offset=0x10000 count=0x1000 trim=1 fua=0 fast=1 ...");
    expect(ours.at(-1)).toBe("connection=2 Disconnect transactions=8");
    expect(ours[0]).toBe("Ready thread_model=3");
    if (KINDS.includes("nbdkit")) expect(ours).toEqual(strip(logs.nbdkit));
  });

  it("read-only, with an export name to quote: the Connect line and listing as nbdkit's (both servers)", async () => {
    const logs = {} as Record<Kind, string[]>;
    await Promise.all(
      KINDS.map(async (k) => {
        const text = await session(k, ["-r", "--filter=log", "memory", "1M", "logfile=log.txt"], "log.txt", async (s) => {
          await runOk("nbdinfo", ["--size", s.uri.replace("nbd+unix:///", "nbd+unix:///a%20b%24%22")]);
        });
        logs[k] = text.trimEnd().split("\n").map((l) => l.replace(TS, ""));
      }),
    );
    expect(logs.nbdstate).toContain(
      'connection=1 Connect export="a b\\$\\"" tls=0 size=0x100000 minsize=0x0 prefsize=0x0 maxsize=0x0 write=0 flush=1 rotational=0 trim=0 zero=0 fua=0 extents=1 cache=2 fast_zero=0',
    );
    if (KINDS.includes("nbdkit")) expect(logs.nbdstate).toEqual(logs.nbdkit);
  });

  it("logappend=true appends to the file; by default it is truncated (both servers)", async () => {
    for (const k of KINDS) {
      const f = join(tmp, `append-${k}.log`);
      for (const extra of ["logappend=true", "logappend=true", "logappend=false", "logappend=true"]) {
        const s = await launch(k, ["--filter=log", "null", "1M", `logfile=${f}`, extra]);
        await s.stop();
      }
      expect(readFileSync(f, "utf8").match(/Ready thread_model=3/g), k).toHaveLength(2);
    }
  });

  it("logscript= runs with act, type, connection, id and the fields as shell variables (both servers)", async () => {
    const script = 'echo "$type $act ${connection:-} ${id:-} ${offset:-} ${count:-} ${fua:-} ${return:-} ${error:-}" >> script.out';
    const outs = {} as Record<Kind, string>;
    await Promise.all(
      KINDS.map(async (k) => {
        outs[k] = await session(k, ["--filter=log", "--filter=error", "memory", "1M", `logscript=${script}`, "error-pread-rate=100%"], "script.out", (s) =>
          py(String.raw`
h = connect()
h.pwrite(b"x" * 512, 1024, nbd.CMD_FLAG_FUA)
try:
    h.pread(512, 0)
except nbd.Error:
    pass
h.shutdown()
print("OK")
`, s.uri),
        );
      }),
    );
    const lines = outs.nbdstate.replace(/\n$/, "").split("\n");
    expect(lines[0]).toBe("PRINT Ready       ");
    expect(lines).toContain("ENTER Write 1 1 0x400 0x200 1  ");
    expect(lines).toContain("LEAVE Write 1 1    0 ");
    expect(lines).toContain("LEAVE Read 1 2    -1 EIO");
    expect(lines.indexOf("ENTER Read 1 2 0x0 0x200   ")).toBe(lines.indexOf("LEAVE Read 1 2    -1 EIO") - 1);
    expect(lines.at(-1)).toBe("PRINT Disconnect 1      ");
    // The same entries; nbdkit's order can come out mixed (its scripts' appends race).
    if (KINDS.includes("nbdkit")) expect([...lines].sort()).toEqual(outs.nbdkit.replace(/\n$/, "").split("\n").sort());
  });

  it("is inactive (no callbacks) without logfile= or logscript=; a logfile that cannot be opened is a one-line error", async () => {
    const f = createLog();
    await f.configComplete!(async () => {});
    expect([f.getReady, f.open, f.prepare, f.pread, f.pwrite, f.listExports]).toEqual(Array(6).fill(undefined));
    for (const k of KINDS) {
      const r = await run(cli(k)[0]!, [...cli(k).slice(1), "-f", "-U", join(tmp, "l.sock"), "--filter=log", "null", "logfile=/nonexistent/dir/log"]);
      expect(r.code, k).toBe(1);
      expect(r.stderr.trim().split("\n"), k).toHaveLength(1);
    }
  });
});

// Figures that depend on timing, masked for comparison.
const maskTimes = (t: string) =>
  t.replace(/\d+\.\d{6} s/g, "T s").replace(/(?:\d+\.\d\d (?:KiB|MiB|GiB)|\d+ bytes|\(n\/a\))\/s/g, "R/s");

describe.skipIf(!haveClients)("stats filter", () => {
  it("writes nbdkit's report at exit: totals, per-request figures, the size and alignment histogram (both servers)", async () => {
    const client = (s: Server) =>
      py(String.raw`
h = connect()
for i in range(20):
    h.pwrite(b"w" * 4096, i * 12288)
for i in range(20):
    h.pread(512, i * 1536)
for i in range(20):
    h.trim(65536, i * 65536)
for i in range(3):
    h.flush()
h.shutdown()
print("OK")
`, s.uri);
    const reports = {} as Record<Kind, string>;
    await Promise.all(KINDS.map(async (k) => (reports[k] = await session(k, ["--filter=stats", "memory", "2M", "statsfile=stats.txt"], "stats.txt", client))));
    const ours = reports.nbdstate;
    expect(ours).toMatch(/^total: 63 ops, \d+\.\d{6} s, 1\.34 MiB, [\d.]+ (?:KiB|MiB)\/s\n/);
    expect(ours).toMatch(/\nwrite: 20 ops, \d+\.\d{6} s, 80\.00 KiB, [\d.]+ (?:KiB|MiB|GiB)\/s op, [\d.]+ (?:KiB|MiB)\/s total\n/);
    expect(ours).toContain("    12 bits: 100.0% (20 reqs, 80.00 KiB total)\n         12 bit aligned: 100.0% (20)\n         13 bit aligned:  50.0% (10)\n");
    expect(ours).toMatch(/\nflush: 3 ops, .* 0 bytes, .*\n$/);
    if (KINDS.includes("nbdkit")) expect(maskTimes(ours)).toBe(maskTimes(reports.nbdkit));
  });

  it("nbdstate: counts every bucket of equal size, 'other sizes' with its own bytes, a single request, and cache in the total", async () => {
    if (isNbdkit) return; // nbdkit drops ties, counts all bytes under "other sizes", shows 1 request as "other", leaves cache out of the total
    const text = await session("nbdstate", ["--filter=stats", "memory", "2M", "statsfile=stats.txt"], "stats.txt", (s) =>
      py(String.raw`
h = connect()
for i in range(19):
    h.pread(512, 512 * (i + 1))
h.pread(65536, 65536)
h.pwrite(b"a" * 512, 512); h.pwrite(b"a" * 512, 1024)
h.pwrite(b"b" * 4096, 4096); h.pwrite(b"b" * 4096, 8192)
h.trim(4096, 8192)
h.cache(512, 0)
h.shutdown()
print("OK")
`, s.uri),
    );
    expect(text).toMatch(/^total: 26 ops, /); // 20 reads, 4 writes, 1 trim, 1 cache
    expect(text).toContain("    other sizes:  5.0% (1 reqs, 64.00 KiB total)\n");
    expect(text).toContain("     9 bits: 50.0% (2 reqs, 1.00 KiB total)\n");
    expect(text).toContain("    12 bits: 50.0% (2 reqs, 8.00 KiB total)\n");
    expect(text).toContain("trim: 1 ops");
    expect(text).toContain("    12 bits: 100.0% (1 reqs, 4.00 KiB total)\n         13 bit aligned: 100.0% (1)\n");
  });

  it("statsappend=true appends; statsthreshold=0 leaves the histogram out (both servers)", async () => {
    for (const k of KINDS) {
      const f = join(tmp, `stats-${k}.txt`);
      for (const extra of ["statsappend=false", "statsappend=true"]) {
        await session(k, ["--filter=stats", "memory", "1M", `statsfile=${f}`, extra, "statsthreshold=0"], "none", (s) =>
          py('h = connect()\nh.pread(512, 512)\nh.shutdown()\nprint("OK")\n', s.uri),
        );
      }
      const t = readFileSync(f, "utf8");
      expect(t.match(/^total: 1 ops/gm), k).toHaveLength(2);
      expect(t, k).not.toContain("breakdown");
    }
  });

  it("the report is written at exit, not before (both servers)", async () => {
    for (const k of KINDS) {
      const s = await launch(k, ["--filter=stats", "memory", "1M", "statsfile=stats.txt"]);
      try {
        await py('h = connect()\nh.pread(512, 0)\nh.shutdown()\nprint("OK")\n', s.uri);
        expect(statSync(join(s.dir, "stats.txt")).size, k).toBe(0);
        s.child.kill("SIGTERM");
        await s.exit;
        expect(readFileSync(join(s.dir, "stats.txt"), "utf8"), k).toMatch(/^total: 1 ops/);
      } finally {
        await s.stop();
      }
    }
  });

  it.each(KINDS)("%s: no statsfile= and a threshold over 100 are one-line errors", async (k) => {
    for (const bad of [[], ["statsfile=s.txt", "statsthreshold=101"]]) {
      const r = await run(cli(k)[0]!, [...cli(k).slice(1), "-f", "-U", join(tmp, "s.sock"), "--filter=stats", "null", ...bad]);
      expect(r.code, `${k} ${bad}`).toBe(1);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
    }
  });
});

describe("stats report numbers", () => {
  it("print as C's printf does: exact ties to even, everything else by the exact binary value", () => {
    const cases: [number, number, string][] = [
      [0.125, 2, "0.12"], [0.375, 2, "0.38"], [2.5, 0, "2"], [3.5, 0, "4"],
      [1.115, 2, "1.11"], [12.35, 1, "12.3"], [5e-7, 6, "0.000000"], [100, 1, "100.0"], [83.33333, 1, "83.3"],
    ];
    for (const [x, d, want] of cases) expect(fixed(x, d), `${x} %.${d}f`).toBe(want);
    expect([humanSize(0), humanSize(1023.9), humanSize(1152), humanSize(1536 * 1024), humanSize(3 * 2 ** 30)]).toEqual([
      "0 bytes", "1023 bytes", "1.12 KiB", "1.50 MiB", "3.00 GiB",
    ]);
  });
});
