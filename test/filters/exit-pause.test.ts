// Server-policy filters: exitlast and exitwhen (the server exits, status
// 0, when it should and not before), time-limit (clients dropped on
// time), pause (the control socket's protocol). Same command lines under
// nbdkit where 1.32.5 has the filter.
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import createTimeLimit from "../../src/filters/time-limit/index.js";
import { makeTmpDir, removeTmpDir, run, sleep } from "../helpers/server.js";
import { PRELUDE } from "../helpers/python.js";
import { PYTHON } from "../helpers/tools.js";
import { haveClients, isNbdkit, KINDS, launch, py, PY_TIMER, type Kind, type Server } from "./fault-helpers.js";

const tmp = makeTmpDir("nbdstate-exit-");
afterAll(() => removeTmpDir(tmp));

/** Resolves with the exit status, or "running" if it is still up after ms. */
async function exitWithin(s: Server, ms: number): Promise<number | null | "running"> {
  const r = await Promise.race([s.exit, sleep(ms).then(() => "running" as const)]);
  return r === "running" ? r : r.code;
}

/** A python3-libnbd client that connects, prints "connected", and disconnects when its stdin closes. */
async function holder(uri: string): Promise<{ child: ChildProcess; release: () => Promise<void> }> {
  const child = spawn(PYTHON, ["-c", PRELUDE + "\nh = connect()\nprint('connected', flush=True)\nsys.stdin.read()\nh.shutdown()\n", uri], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const first = await lines.next();
  if (first.value !== "connected") throw new Error("holder did not connect");
  const gone = new Promise<void>((r) => child.on("exit", () => r()));
  return { child, release: async () => void (child.stdin!.end(), await gone) };
}

const nbdinfoOk = async (uri: string) => (await run("nbdinfo", ["--size", uri], { timeoutMs: 10_000 })).code === 0;

describe.skipIf(!haveClients)("exitlast filter", () => {
  it.each(KINDS)("%s: keeps serving until the first client, exits (status 0) when the last one leaves", async (k) => {
    const s = await launch(k, ["--filter=exitlast", "memory", "1M"]);
    try {
      expect(await exitWithin(s, 300)).toBe("running");
      const a = await holder(s.uri);
      expect(await nbdinfoOk(s.uri)).toBe(true); // a second client comes and goes
      expect(await exitWithin(s, 300)).toBe("running");
      await a.release();
      expect(await exitWithin(s, 5000)).toBe(0);
    } finally {
      await s.stop();
    }
  });
});

describe.skipIf(!haveClients)("exitwhen filter", () => {
  it.each(KINDS)("%s: after the event new clients are refused; the server exits when the connected one leaves", async (k) => {
    const s = await launch(k, ["--filter=exitwhen", "memory", "1M", "exit-when-file-created=stop", "exit-when-poll=1"]);
    try {
      const a = await holder(s.uri);
      writeFileSync(join(s.dir, "stop"), ""); // relative to the server's directory
      expect(await nbdinfoOk(s.uri)).toBe(false);
      expect(await exitWithin(s, 1100)).toBe("running"); // a client is still connected
      await a.release();
      expect(await exitWithin(s, 5000)).toBe(0);
    } finally {
      await s.stop();
    }
  });

  it.each(KINDS)("%s: an event that already happened makes the server exit at once, status 0", async (k) => {
    const flag = join(tmp, `there-${k}`);
    writeFileSync(flag, "");
    const s = await launch(k, ["--filter=exitwhen", "memory", "1M", `exit-when-file-created=${flag}`], { noWait: true });
    try {
      expect(await exitWithin(s, 5000)).toBe(0);
    } finally {
      await s.stop();
    }
  });

  // While idle the events are polled (exit-when-poll=1): each kind of event, on both servers at once.
  interface IdleEvent {
    args: string[];
    stdio?: Parameters<typeof launch>[2];
    fire(s: Server & { child: ChildProcess }): void;
  }
  const idle: [string, (k: Kind) => IdleEvent][] = [
    ["exit-when-file-deleted", (k) => {
      const f = join(tmp, `del-${k}`);
      writeFileSync(f, "");
      return { args: [`exit-when-file-deleted=${f}`], fire: () => rmSync(f) };
    }],
    ["exit-when-process-exits", () => {
      const child = spawn("sleep", ["60"], { stdio: "ignore" });
      return { args: [`exit-when-process-exits=${child.pid}`], fire: () => child.kill() };
    }],
    ["exit-when-script", (k) => {
      const f = join(tmp, `script-${k}`);
      return { args: [`exit-when-script=test -f ${f} && exit 88; exit 0`], fire: () => writeFileSync(f, "") };
    }],
    ["exit-when-pipe-closed", () => ({
      // fd 3 of the server is one end of a pipe; closing ours is the event.
      args: ["exit-when-pipe-closed=3"],
      stdio: { stdio: ["ignore", "ignore", "pipe", "pipe"] },
      fire: (s) => (s.child.stdio[3] as unknown as { destroy(): void }).destroy(),
    })],
  ];
  it.concurrent.each(idle)("%s: the server exits (status 0) within the poll interval, not before the event (both servers)", async (_name, make) => {
    await Promise.all(
      KINDS.map(async (k) => {
        const ev = make(k);
        const s = await launch(k, ["--filter=exitwhen", "memory", "1M", ...ev.args, "exit-when-poll=1"], ev.stdio);
        try {
          expect(await exitWithin(s, 1200), k).toBe("running");
          ev.fire(s);
          expect(await exitWithin(s, 3500), k).toBe(0);
        } finally {
          await s.stop();
        }
      }),
    );
  });

  it.each(KINDS)("%s: a pid that does not exist and a bad number are one-line errors", async (k) => {
    for (const bad of ["exit-when-process-exits=999999999", "exit-when-poll=often"]) {
      const cmd = k === "nbdkit" || isNbdkit ? ["nbdkit"] : [process.execPath, "bin/nbdstate.js"];
      const r = await run(cmd[0]!, [...cmd.slice(1), "-f", "-U", join(tmp, "x.sock"), "--filter=exitwhen", "null", "1M", bad]);
      expect(r.code, `${k} ${bad}`).toBe(1);
      expect(r.stderr.trim().split("\n"), bad).toHaveLength(1);
    }
  });
});

describe.skipIf(!haveClients || isNbdkit)("time-limit filter (nbdkit >= 1.42; not in 1.32.5)", () => {
  it("drops a busy client and an idle one once the limit has passed", async () => {
    const s = await launch("nbdstate", ["--filter=time-limit", "memory", "1M", "time-limit=600ms"]);
    try {
      const r = await py<{ busy: number; idle: number; dead: boolean }>(PY_TIMER + String.raw`
t = time.monotonic()
h = connect()
while errno_of(h.pread, 512, 0) == 0 and time.monotonic() - t < 5:
    time.sleep(0.02)
busy = time.monotonic() - t
t = time.monotonic()
i = connect()
i.poll(5000)                    # nothing in flight: returns when the server hangs up
idle = time.monotonic() - t
print(json.dumps(dict(busy=busy, idle=idle, dead=bool(i.aio_is_dead() or i.aio_is_closed()))))
print("OK")
`, s.uri);
      for (const t of [r.busy, r.idle]) {
        expect(t).toBeGreaterThanOrEqual(0.55);
        expect(t).toBeLessThan(1.2);
      }
      expect(r.dead).toBe(true);
      expect(s.exited).toBe(false);
    } finally {
      await s.stop();
    }
  });

  it("time-limit=0 is no limit (no callbacks); a bad time is a one-line error", async () => {
    const f = createTimeLimit();
    await f.config!(async () => {}, "time-limit", "0");
    await f.configComplete!(async () => {});
    expect([f.open, f.close, f.pread]).toEqual([undefined, undefined, undefined]);
    const r = await run(process.execPath, ["bin/nbdstate.js", "-f", "-U", join(tmp, "t.sock"), "--filter=time-limit", "null", "time-limit=later"]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
  });
});

describe.skipIf(!haveClients)("pause filter", () => {
  const CONTROL = String.raw`
import socket
c = socket.socket(socket.AF_UNIX); c.connect(EXTRA[0])
def ask(b, n=1):
    c.sendall(b)
    return c.recv(n).decode()
def pending_after(h, cookie, secs):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        h.poll(20)
        if h.aio_command_completed(cookie):
            return False
    return True
`;

  it("p waits for requests in flight, then holds new ones until r; other bytes get X, blanks nothing (both servers)", async () => {
    const script = PY_TIMER + CONTROL + String.raw`
h = connect()
r = {}
slow = h.aio_pread(nbd.Buffer(512), 0)        # the delay filter below holds it 300 ms
h.poll(100)                          # let it reach the server (a request that comes after p would wait)
t = time.monotonic(); r["P"] = ask(b"p"); r["paused_after"] = time.monotonic() - t
t = time.monotonic(); wait_all(h, [slow]); r["read_wait"] = time.monotonic() - t   # its reply was sent before P
w = h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(b"q" * 512)), 0)
r["held"] = pending_after(h, w, 0.3)
t = time.monotonic(); r["R"] = ask(b"r"); wait_all(h, [w]); r["resumed_after"] = time.monotonic() - t
r["X"] = ask(b" \n\tz")
r["R2"] = ask(b"r")
print(json.dumps(r))
print("OK")
`;
    const out: Record<string, Record<string, unknown>> = {};
    await Promise.all(
      KINDS.map(async (k) => {
        const s = await launch(k, ["--filter=pause", "--filter=delay", "memory", "1M", "pause-control=ctl.sock", "delay-read=300ms"]);
        try {
          out[k] = await py(script, s.uri, [join(s.dir, "ctl.sock")]);
        } finally {
          await s.stop();
        }
      }),
    );
    for (const k of KINDS) {
      const r = out[k]!;
      expect(r.P, k).toBe("P");
      expect(r.paused_after as number, k).toBeGreaterThanOrEqual(0.15);
      expect(r.read_wait as number, `${k}: P came after the read in flight finished`).toBeLessThan(0.05);
      expect(r.held, `${k}: a write sent while paused waits`).toBe(true);
      expect(r.R, k).toBe("R");
      expect(r.resumed_after as number, k).toBeLessThan(0.2);
      expect(r.X, k).toBe("X");
      expect(r.R2, k).toBe("R");
    }
  });

  it.skipIf(isNbdkit)("nbdstate: a flush is held while paused too (nbdkit lets it through)", async () => {
    const s = await launch("nbdstate", ["--filter=pause", "memory", "1M", "pause-control=ctl.sock"]);
    try {
      const r = await py<{ held: boolean; done: boolean }>(PY_TIMER + CONTROL + String.raw`
h = connect()
ask(b"p")
f = h.aio_flush()
held = pending_after(h, f, 0.3)
ask(b"r"); wait_all(h, [f])
print(json.dumps(dict(held=held, done=True)))
print("OK")
`, s.uri, [join(s.dir, "ctl.sock")]);
      expect(r).toEqual({ held: true, done: true });
    } finally {
      await s.stop();
    }
  });

  it.each(KINDS)("%s: without pause-control= the server does not start (one-line error)", async (k) => {
    const cmd = k === "nbdkit" || isNbdkit ? ["nbdkit"] : [process.execPath, "bin/nbdstate.js"];
    const r = await run(cmd[0]!, [...cmd.slice(1), "-f", "-U", join(tmp, "p.sock"), "--filter=pause", "null", "1M"]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/pause-control/);
  });
});
