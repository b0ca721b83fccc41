// delay, error and retry-request filters: timing and error rates measured
// with real clients (python3-libnbd), seeded and bounded, and the same
// command lines under nbdkit.
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import createDelay from "../../src/filters/delay/index.js";
import createError from "../../src/filters/error/index.js";
import createRetryRequest from "../../src/filters/retry-request/index.js";
import { makeTmpDir, removeTmpDir, runCli, runOk } from "../helpers/server.js";
import { runningStack } from "../helpers/stack.js";
import { createCountingPlugin } from "./counting-plugin.js";
import { eachKind, haveClients, isNbdkit, KINDS, launch, py, PY_TIMER } from "./fault-helpers.js";

const tmp = makeTmpDir("nbdstate-fault-");
afterAll(() => removeTmpDir(tmp));

// errno numbers as python reports them
const E = { EPERM: 1, EIO: 5, ENOMEM: 12, EINVAL: 22, ENOSPC: 28, ENOTSUP: 95, ESHUTDOWN: 108 };

describe.skipIf(!haveClients)("delay filter", () => {
  it("delays each kind of request by its own delay, and nothing else (both servers)", async () => {
    const args = ["--filter=delay", "memory", "1M", "delay-read=120ms", "delay-write=60ms", "delay-zero=1", "delay-trim=70ms", "delay-extents=80ms", "delay-cache=90ms"];
    const script = PY_TIMER + String.raw`
h = connect()
buf = b"x" * 4096
r = dict(
  read=[timed(h.pread, 4096, 0) for _ in range(3)],
  write=[timed(h.pwrite, buf, 0) for _ in range(3)],
  trim=[timed(h.trim, 4096, 0)],
  extents=[timed(extents, h, 65536, 0)],
  cache=[timed(h.cache, 4096, 0)],
  flush=[timed(h.flush) for _ in range(3)],
)
t = time.monotonic(); h.zero(4096, 0); r["zero"] = [time.monotonic() - t]
print(json.dumps(r))
print("OK")
`;
    const res = await eachKind(args, (s) => py<Record<string, number[]>>(script, s.uri));
    for (const k of KINDS) {
      const r = res[k];
      const within = (xs: number[], lo: number, what: string) => {
        for (const x of xs) {
          expect(x, `${k} ${what}`).toBeGreaterThanOrEqual(lo - 0.002);
          expect(x, `${k} ${what}`).toBeLessThan(lo + 0.25);
        }
      };
      within(r.read!, 0.12, "read");
      within(r.write!, 0.06, "write");
      within(r.zero!, 1, "zero");
      within(r.trim!, 0.07, "trim");
      within(r.extents!, 0.08, "extents");
      within(r.cache!, 0.09, "cache");
      for (const x of r.flush!) expect(x, `${k} flush is not delayed`).toBeLessThan(0.05);
    }
  });

  it("wdelay= delays writes, zeroes and trims; delay-fast-zero=false fails fast zero at once with ENOTSUP", async () => {
    const args = ["--filter=delay", "memory", "1M", "wdelay=100ms", "delay-fast-zero=false"];
    const script = PY_TIMER + String.raw`
h = connect()
assert h.can_fast_zero()
r = dict(write=timed(h.pwrite, b"y" * 512, 0), zero=timed(h.zero, 512, 0), trim=timed(h.trim, 512, 0), read=timed(h.pread, 512, 0))
t = time.monotonic()
r["fast_errno"] = errno_of(h.zero, 512, 0, nbd.CMD_FLAG_FAST_ZERO)
r["fast"] = time.monotonic() - t
print(json.dumps(r))
print("OK")
`;
    const res = await eachKind(args, (s) => py<Record<string, number>>(script, s.uri));
    for (const k of KINDS) {
      const r = res[k];
      for (const op of ["write", "zero", "trim"]) {
        expect(r[op], `${k} ${op}`).toBeGreaterThanOrEqual(0.098);
        expect(r[op], `${k} ${op}`).toBeLessThan(0.35);
      }
      expect(r.read, `${k} read`).toBeLessThan(0.05);
      expect(r.fast_errno, k).toBe(E.ENOTSUP);
      expect(r.fast, `${k} fast zero fails without waiting`).toBeLessThan(0.05);
    }
  });

  it("delay-open= delays the handshake; delay-close= delays a graceful disconnect", async () => {
    const script = PY_TIMER + String.raw`
t = time.monotonic(); h = connect(); opened = time.monotonic() - t
h.pread(512, 0)
t = time.monotonic(); h.shutdown(); closed = time.monotonic() - t
print(json.dumps(dict(opened=opened, closed=closed)))
print("OK")
`;
    const res = await eachKind(["--filter=delay", "memory", "1M", "delay-open=200ms", "delay-close=300ms"], (s) =>
      py<{ opened: number; closed: number }>(script, s.uri),
    );
    for (const k of KINDS) {
      expect(res[k].opened, k).toBeGreaterThanOrEqual(0.198);
      expect(res[k].opened, k).toBeLessThan(0.6);
      expect(res[k].closed, k).toBeGreaterThanOrEqual(0.298);
      expect(res[k].closed, k).toBeLessThan(0.8);
    }
  });

  it.skipIf(isNbdkit)("nbdstate: delay-flush= delays flush (nbdkit has no flush delay); fractions and us suffixes parse (nbdkit >= 1.40)", async () => {
    const s = await launch("nbdstate", ["--filter=delay", "memory", "1M", "delay-flush=0.15", "delay-read=500us", "delay-trim=0.07s"]);
    try {
      const r = await py<{ flush: number; read: number; trim: number }>(PY_TIMER + String.raw`
h = connect()
print(json.dumps(dict(flush=timed(h.flush), read=timed(h.pread, 512, 0), trim=timed(h.trim, 512, 0))))
print("OK")
`, s.uri);
      expect(r.trim).toBeGreaterThanOrEqual(0.068);
      expect(r.trim).toBeLessThan(0.3);
      expect(r.flush).toBeGreaterThanOrEqual(0.148);
      expect(r.flush).toBeLessThan(0.4);
      expect(r.read).toBeLessThan(0.05);
    } finally {
      await s.stop();
    }
  });

  it("a filter without a delay for a request adds no callback for it", async () => {
    const f = createDelay();
    await f.config!(async () => {}, "delay-read", "10ms");
    await f.configComplete!(async () => {});
    expect(f.pread).toBeTypeOf("function");
    expect([f.pwrite, f.zero, f.trim, f.extents, f.cache, f.flush, f.open, f.finalize, f.canFastZero]).toEqual(Array(9).fill(undefined));
  });

  it.each(KINDS)("%s: a bad delay is a one-line error and exit status 1", async (k) => {
    const r = await runCliAs(k, ["--filter=delay", "memory", "1M", "delay-read=soon"]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/delay-read/);
  });
});

describe.skipIf(!haveClients)("error filter", () => {
  const RATE_SCRIPT = String.raw`
h = connect()
fails = "".join("x" if errno_of(h.pread, 512, (i % 64) * 512) else "." for i in range(2000))
print(json.dumps(dict(pattern=fails)))
print("OK")
`;
  const runRate = async (k: "nbdstate" | "nbdkit", extra: string[]) => {
    const s = await launch(k, ["--filter=error", "memory", "1M", "error-rate=30%", ...extra]);
    try {
      return (await py<{ pattern: string }>(PY_TIMER + RATE_SCRIPT, s.uri)).pattern;
    } finally {
      await s.stop();
    }
  };
  const share = (p: string) => p.split("").filter((c) => c === "x").length / p.length;

  it.each(KINDS)("%s: error-rate=30% fails 30 per cent of 2000 reads (within 3 standard deviations)", async (k) => {
    const p = await runRate(k, isNbdkit || k === "nbdkit" ? [] : ["error-seed=7"]);
    expect(share(p)).toBeGreaterThan(0.3 - 0.031);
    expect(share(p)).toBeLessThan(0.3 + 0.031);
  });

  it.skipIf(isNbdkit)("nbdstate: error-seed= repeats the same failures; another seed gives others", async () => {
    const [a, b, c] = await Promise.all([runRate("nbdstate", ["error-seed=7"]), runRate("nbdstate", ["error-seed=7"]), runRate("nbdstate", ["error-seed=8"])]);
    expect(a).toBe(b);
    expect(c).not.toBe(a);
    expect(Math.abs(share(c) - 0.3)).toBeLessThan(0.031);
  });

  it("each request kind fails with its own error; the others are untouched (both servers)", async () => {
    const args = [
      "--filter=error", "memory", "1M",
      "error-pread=EPERM", "error-pwrite=ENOMEM", "error-trim=EINVAL", "error-zero=ENOSPC", "error-extents=ESHUTDOWN", "error-cache=EIO",
      "error-pread-rate=100%", "error-pwrite-rate=1", "error-trim-rate=100%", "error-zero-rate=100%", "error-extents-rate=100%", "error-cache-rate=100%",
    ];
    const script = PY_TIMER + String.raw`
h = connect()
r = dict(
  pread=errno_of(h.pread, 512, 0), pwrite=errno_of(h.pwrite, b"a" * 512, 0), trim=errno_of(h.trim, 512, 0),
  zero=errno_of(h.zero, 512, 0), extents=errno_of(extents, h, 512, 0), cache=errno_of(h.cache, 512, 0), flush=errno_of(h.flush))
print(json.dumps(r))
print("OK")
`;
    const res = await eachKind(args, (s) => py<Record<string, number>>(script, s.uri));
    const want = { pread: E.EPERM, pwrite: E.ENOMEM, trim: E.EINVAL, zero: E.ENOSPC, extents: E.ESHUTDOWN, cache: E.EIO, flush: 0 };
    for (const k of KINDS) expect(res[k], k).toEqual(want);
  });

  it("error=ENOSPC with only write rates: writes and zeroes fail, reads and trims succeed (the man page's example, both servers)", async () => {
    const script = PY_TIMER + String.raw`
h = connect()
print(json.dumps([errno_of(h.pwrite, b"a" * 512, 0), errno_of(h.zero, 512, 0), errno_of(h.pread, 512, 0), errno_of(h.trim, 512, 0)]))
print("OK")
`;
    const res = await eachKind(["--filter=error", "memory", "1M", "error=ENOSPC", "error-pwrite-rate=100%", "error-zero-rate=100%"], (s) =>
      py<number[]>(script, s.uri),
    );
    for (const k of KINDS) expect(res[k], k).toEqual([E.ENOSPC, E.ENOSPC, 0, 0]);
  });

  it("error-file=: errors only while the trigger file exists (both servers)", async () => {
    const res = await eachKind(["--filter=error", "memory", "1M", "error-rate=100%", "error-file=trigger"], async (s) => {
      const trigger = join(s.dir, "trigger"); // relative names are taken from the server's directory
      return py<number[]>(PY_TIMER + String.raw`
h = connect()
out = [errno_of(h.pread, 512, 0)]
open(EXTRA[0], "w").close()
out.append(errno_of(h.pread, 512, 0))
os.unlink(EXTRA[0])
out.append(errno_of(h.pread, 512, 0))
print(json.dumps(out))
print("OK")
`, s.uri, [trigger]);
    });
    for (const k of KINDS) expect(res[k], k).toEqual([0, E.EIO, 0]);
  });

  it.each(KINDS)("%s: an unknown error name and a rate above 100 per cent are one-line errors", async (k) => {
    for (const bad of ["error=EWHATEVER", "error-rate=150%"]) {
      const r = await runCliAs(k, ["--filter=error", "memory", "1M", bad]);
      expect(r.code, bad).toBe(1);
      expect(r.stderr.trim().split("\n"), bad).toHaveLength(1);
    }
  });

  it("kinds of request with no error rate get no callback", async () => {
    const f = createError();
    await f.config!(async () => {}, "error-pwrite-rate", "10%");
    await f.configComplete!(async () => {});
    expect(f.pwrite).toBeTypeOf("function");
    expect([f.pread, f.preadSparse, f.zero, f.trim, f.extents, f.cache, f.flush]).toEqual(Array(7).fill(undefined));
  });
});

describe("retry-request filter", () => {
  const running = async (params: [string, string][]) => {
    const plugin = createCountingPlugin();
    const stack = await runningStack(plugin, [createRetryRequest()], params);
    return { plugin, stack };
  };
  const FAST: [string, string][] = [["retry-request-delay", "20ms"]];

  it("retries a failed request after the delay, up to retry-request-retries times, on the same context", async () => {
    const { plugin, stack } = await running([...FAST, ["retry-request-retries", "3"]]);
    const c = await stack.open(false, "", false);
    plugin.failNext = 3;
    const t0 = performance.now();
    await c.ctx.pread(Buffer.alloc(8), 0, 0);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(3 * 20 - 1);
    expect(plugin.counts.open).toBe(1); // no reopen (that is the retry filter)
    plugin.failNext = 4;
    await expect(c.ctx.pwrite(Buffer.from("x"), 0, 0)).rejects.toThrow();
    await stack.close(c);
    await stack.unload();
  });

  it("retries the open too, unless retry-request-open=false", async () => {
    let { plugin, stack } = await running(FAST);
    plugin.failOpens = 2;
    const c = await stack.open(false, "", false);
    expect(plugin.counts.open).toBe(1);
    await stack.close(c);
    await stack.unload();
    ({ plugin, stack } = await running([...FAST, ["retry-request-open", "false"]]));
    plugin.failOpens = 1;
    await expect(stack.open(false, "", false)).rejects.toThrow(/open failed/);
    await stack.unload();
  });

  it("retry-request-retries=0 turns the filter off (no callbacks); a delay of 0 is refused", async () => {
    const f = createRetryRequest();
    await f.config!(async () => {}, "retry-request-retries", "0");
    await f.configComplete!(async () => {});
    expect([f.open, f.pread, f.pwrite, f.flush]).toEqual([undefined, undefined, undefined, undefined]);
    await expect(Promise.resolve().then(() => createRetryRequest().config!(async () => {}, "retry-request-delay", "0"))).rejects.toThrow(/cannot be 0/);
  });

  it.skipIf(!haveClients)("over the error filter: gives up with the error after the retries (both servers, 1 s delay)", async () => {
    const args = ["--filter=retry-request", "--filter=error", "memory", "1M", "error-pread-rate=100%", "retry-request-retries=1", "retry-request-delay=1"];
    const script = PY_TIMER + String.raw`
h = connect()
t = time.monotonic(); e = errno_of(h.pread, 512, 0); took = time.monotonic() - t
print(json.dumps(dict(errno=e, took=took, write=timed(h.pwrite, b"z" * 512, 0))))
print("OK")
`;
    const res = await eachKind(args, (s) => py<{ errno: number; took: number; write: number }>(script, s.uri));
    for (const k of KINDS) {
      expect(res[k].errno, k).toBe(E.EIO);
      expect(res[k].took, k).toBeGreaterThanOrEqual(0.998);
      expect(res[k].took, k).toBeLessThan(1.6);
      expect(res[k].write, `${k}: a request that succeeds is not delayed`).toBeLessThan(0.1);
    }
  });

  it.skipIf(!haveClients || isNbdkit)("nbdstate: a read that fails while a trigger file exists succeeds on its retry once it is gone", async () => {
    const trigger = join(tmp, "retry-trigger");
    writeFileSync(trigger, "");
    const s = await launch("nbdstate", [
      "--filter=retry-request", "--filter=error", "memory", "1M", "error-rate=100%", `error-file=${trigger}`, "retry-request-delay=300ms",
    ]);
    try {
      const r = await py<{ took: number; errno: number }>(PY_TIMER + String.raw`
import threading
h = connect()
threading.Timer(0.1, lambda: os.unlink(EXTRA[0])).start()
t = time.monotonic(); e = errno_of(h.pread, 512, 0)
print(json.dumps(dict(errno=e, took=time.monotonic() - t)))
print("OK")
`, s.uri, [trigger]);
      expect(r.errno).toBe(0);
      expect(r.took).toBeGreaterThanOrEqual(0.298);
      expect(r.took).toBeLessThan(0.8);
    } finally {
      rmSync(trigger, { force: true });
      await s.stop();
    }
  });
});

/** runCli, as nbdstate or nbdkit (whichever is asked). */
async function runCliAs(kind: "nbdstate" | "nbdkit", args: string[]) {
  if (kind === "nbdkit" && !isNbdkit) {
    const { run } = await import("../helpers/server.js");
    return run("nbdkit", ["-f", "-U", join(tmp, "unused.sock"), ...args], { timeoutMs: 15_000 });
  }
  return runCli(["-f", "-U", join(tmp, "unused.sock"), ...args], { timeoutMs: 15_000 });
}

describe.skipIf(!haveClients)("export flags through each filter", () => {
  // Block sizes aside: nbdstate's server states defaults where nbdkit states none.
  const flags = (json: string) => {
    const e = JSON.parse(json).exports[0];
    for (const k of ["uri", "block_size_minimum", "block_size_preferred", "block_size_maximum"]) delete e[k];
    return e;
  };
  const cases: [string, string[]][] = [
    ["delay", ["delay-zero=1", "delay-fast-zero=false", "rdelay=1ms"]],
    ["error", ["error-rate=0"]],
    ["rate", ["rate=1G"]],
    ["retry-request", []],
    ["exitlast", []],
    ["exitwhen", ["exit-when-file-created=/nonexistent/stop"]],
    ["pause", ["pause-control=ctl.sock"]],
    ["log", ["logfile=log.txt"]],
    ["stats", ["statsfile=stats.txt"]],
  ];
  it.each(cases)("--filter=%s: nbdinfo --json shows nbdkit's flags and size, read-write and -r", async (filter, params) => {
    await Promise.all([[], ["-r"]].map(async (ro) => {
      const res = await eachKind([...ro, `--filter=${filter}`, "memory", "1M", ...params], async (s) =>
        flags((await runOk("nbdinfo", ["--json", s.uri])).stdout),
      );
      expect(res.nbdstate["export-size"]).toBe(1048576);
      expect(res.nbdstate.is_read_only).toBe(ro.length > 0);
      expect(res.nbdstate.contexts).toEqual(["base:allocation"]);
      if (filter === "exitlast" && !isNbdkit) {
        // nbdkit exits once nbdinfo's NBD_OPT_INFO context closes, before
        // nbdinfo has read the content: nbdstate lets it finish.
        expect(res.nbdstate.content).toBe("data");
        if (res.nbdkit) delete res.nbdstate.content;
      }
      if (res.nbdkit) expect(res.nbdstate, filter).toEqual(res.nbdkit);
    }));
  });
});
