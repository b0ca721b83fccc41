// The retry filter: a failed request closes the context below, opens a new
// one (after a delay, exponential by default) and runs again. In-process
// with a plugin that fails on demand, then for real: the nbd plugin whose
// upstream nbdkit is killed in the middle of a client's connection and
// started again on the same socket.
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stack } from "../../src/backend/stack.js";
import { NbdClient } from "../../src/client/index.js";
import createRetry from "../../src/filters/retry/index.js";
import * as C from "../../src/protocol/constants.js";
import { isNbdkit, makeTmpDir, removeTmpDir, sleep, startServer } from "../helpers/server.js";
import { PYTHON, requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";
import { startNbdkitAt, type Upstream } from "../helpers/upstream.js";
import { createCountingPlugin } from "./counting-plugin.js";
import { runningStack } from "../helpers/stack.js";

async function running(params: [string, string][], plugin = createCountingPlugin()) {
  const stack = await runningStack(plugin, [createRetry()], params);
  return { stack, plugin };
}

const FAST: [string, string][] = [["retry-delay", "0.01"]];

describe("retry filter (in-process Stack)", () => {
  it("parses its parameters (fractions of a second too) and passes the rest on", async () => {
    const stack = new Stack(createCountingPlugin(), [createRetry()]);
    await stack.load();
    await stack.config("retries", "3");
    await stack.config("retry-delay", "0.1");
    await stack.config("retry-delay", "2");
    await stack.config("retry-exponential", "no");
    await stack.config("retry-readonly", "yes");
    // A bad parameter fails its layer (the server stops): each on a fresh stack.
    const bad = async (k: string, v: string) => {
      const s = new Stack(createCountingPlugin(), [createRetry()]);
      await s.load();
      return s.config(k, v);
    };
    await expect(bad("retries", "many")).rejects.toThrow(/retry: retries/);
    await expect(bad("retries", "-1")).rejects.toThrow(/retry: retries/);
    await expect(bad("retry-delay", "-1")).rejects.toThrow(/retry: retry-delay/);
    await expect(bad("retry-delay", "1s")).rejects.toThrow(/retry: retry-delay/);
    await expect(bad("retry-exponential", "perhaps")).rejects.toThrow(/retry-exponential/);
    // Not the filter's: the counting plugin has no config callback.
    await expect(bad("size", "1M")).rejects.toThrow(/does not take parameters/);
  });

  it("a failed request is retried on a newly opened context below", async () => {
    const { stack, plugin } = await running(FAST);
    const c = await stack.open(false, "", false);
    expect(plugin.counts.open).toBe(1);
    plugin.failNext = 2;
    await c.ctx.pread(Buffer.alloc(8), 0, 0);
    expect(plugin.events).toEqual([
      "open rw: #1", "fail #1", "finalize #1", "close #1",
      "open rw: #2", "fail #2", "finalize #2", "close #2",
      "open rw: #3", "pread #3",
    ]);
    await c.ctx.pwrite(Buffer.from("abc"), 0, 0); // no failure: no reopen
    expect(plugin.counts.open).toBe(3);
    await stack.close(c);
    expect(plugin.counts).toEqual({ open: 3, prepare: 3, finalize: 3, close: 3 });
    await stack.unload();
  });

  it("gives up after retries=N with the last error", async () => {
    const { stack, plugin } = await running([...FAST, ["retries", "2"]]);
    const c = await stack.open(false, "", false);
    plugin.failNext = 100;
    await expect(c.ctx.pwrite(Buffer.from("x"), 0, 0)).rejects.toMatchObject({ errno: C.NBD_EIO });
    expect(plugin.counts.open).toBe(3); // the first + 2 reopens
    plugin.failNext = 0;
    await c.ctx.pwrite(Buffer.from("x"), 0, 0); // the connection is still usable
    await stack.close(c);
    await stack.unload();
    expect(plugin.counts.close).toBe(plugin.counts.open);
  });

  it("retries=0 never retries", async () => {
    const { stack, plugin } = await running([["retries", "0"]]);
    const c = await stack.open(false, "", false);
    plugin.failNext = 1;
    await expect(c.ctx.flush(0)).rejects.toMatchObject({ errno: C.NBD_EIO });
    expect(plugin.counts.open).toBe(1);
    await stack.close(c);
    await stack.unload();
  });

  it("waits retry-delay seconds, doubled each time unless retry-exponential=no", async () => {
    // 3 retries of 0.1 s: 0.1 + 0.2 + 0.4 s exponentially, 3 x 0.1 s without.
    for (const [exp, min, max] of [["yes", 0.7, 3], ["no", 0.3, 0.65]] as const) {
      const { stack, plugin } = await running([["retry-delay", "0.1"], ["retries", "3"], ["retry-exponential", exp]]);
      const c = await stack.open(false, "", false);
      plugin.failNext = 100;
      const t0 = performance.now();
      await expect(c.ctx.pread(Buffer.alloc(1), 0, 0)).rejects.toThrow();
      const s = (performance.now() - t0) / 1000;
      expect(s).toBeGreaterThanOrEqual(min - 0.01);
      expect(s).toBeLessThan(max);
      await stack.close(c);
      await stack.unload();
    }
  });

  it("retry-readonly=yes: after a failure the context is reopened read-only and writes fail with EPERM", async () => {
    const { stack, plugin } = await running([...FAST, ["retry-readonly", "yes"]]);
    const c = await stack.open(false, "", false);
    await c.ctx.pwrite(Buffer.from("x"), 0, 0);
    plugin.failNext = 1;
    await c.ctx.pread(Buffer.alloc(1), 0, 0);
    expect([...plugin.byKey.keys()]).toEqual(["rw:", "ro:"]);
    const opens = plugin.counts.open;
    await expect(c.ctx.pwrite(Buffer.from("x"), 0, 0)).rejects.toMatchObject({ errno: C.NBD_EPERM });
    await expect(c.ctx.zero(1, 0, 0)).rejects.toMatchObject({ errno: C.NBD_EPERM });
    await expect(c.ctx.trim(1, 0, 0)).rejects.toMatchObject({ errno: C.NBD_EPERM });
    expect(plugin.counts.open).toBe(opens); // failed at once, no retry
    await c.ctx.pread(Buffer.alloc(1), 0, 0);
    await stack.close(c);
    // A new connection opens read-write again.
    const d = await stack.open(false, "", false);
    await d.ctx.pwrite(Buffer.from("y"), 0, 0);
    await stack.close(d);
    await stack.unload();
  });

  it("the first open is retried too", async () => {
    const { stack, plugin } = await running(FAST);
    plugin.failOpens = 2;
    const c = await stack.open(false, "", false);
    expect(plugin.events).toEqual(["open failed", "open failed", "open rw: #1"]);
    await c.ctx.pread(Buffer.alloc(1), 0, 0);
    await stack.close(c);
    plugin.failOpens = 100;
    await expect(stack.open(false, "", false)).rejects.toThrow(/open failed/);
    await stack.unload();
  });

  it("requests failing together reopen once; a context closes only after its requests settled", async () => {
    const { stack, plugin } = await running(FAST);
    const c = await stack.open(false, "", false);
    plugin.failNext = 4;
    await Promise.all(Array.from({ length: 4 }, (_, i) => c.ctx.pread(Buffer.alloc(1), i, 0)));
    expect(plugin.counts.open).toBe(2);
    // A slow read still running on #2 while a write fails on #2 and reopens.
    plugin.readDelay = 150;
    const slow = c.ctx.pread(Buffer.alloc(1), 0, 0);
    await sleep(10);
    plugin.readDelay = 0;
    plugin.failNext = 1;
    await c.ctx.pwrite(Buffer.from("z"), 0, 0);
    await expect(slow).resolves.toBeUndefined();
    const ev = plugin.events;
    expect(ev.indexOf("pread #2")).toBeGreaterThan(-1);
    expect(ev.indexOf("pread #2")).toBeLessThan(ev.indexOf("close #2"));
    expect(ev.indexOf("close #2")).toBeLessThan(ev.indexOf("pwrite #3"));
    await stack.close(c);
    await stack.unload();
    expect(plugin.counts.close).toBe(plugin.counts.open);
  });

  it("fast zero that is not supported fails at once (the client falls back), without retrying", async () => {
    const { stack, plugin } = await running(FAST);
    const c = await stack.open(false, "", false);
    await expect(c.ctx.zero(512, 0, 8 /* FLAG_FAST_ZERO */)).rejects.toMatchObject({ errno: C.NBD_ENOTSUP });
    expect(plugin.counts.open).toBe(1);
    await stack.close(c);
    await stack.unload();
  });
});

// ---------------------------------------------------------------------------
// The nbd plugin under the retry filter, with the upstream stopped and
// started again on the same socket, over a file so the data survives.

const tools = requireTools([TOOLS.nbdkit]);
const python = requirePythonLibnbd();
const RETRY = ["retries=30", "retry-delay=0.1", "retry-exponential=no"];

describe.skipIf(isNbdkit || !tools)("retry filter + nbd plugin: the upstream server restarts", () => {
  let dir: string;
  let disk: string;
  let upSock: string;
  beforeAll(() => {
    dir = makeTmpDir("retry-");
    disk = join(dir, "disk.img");
    upSock = join(dir, "up.sock");
  });
  afterAll(() => removeTmpDir(dir));

  const startUpstream = () => startNbdkitAt(upSock, ["file", disk]);
  /** Kill the upstream hard, start it again on the same socket after `ms`. */
  async function bounce(up: Upstream, ms = 300): Promise<{ next: Promise<Upstream> }> {
    await up.stop("SIGKILL");
    return { next: sleep(ms).then(startUpstream) };
  }

  for (const shared of [false, true]) {
    it(`src/client: reads and writes after the restart succeed with the right data${shared ? " (shared=true)" : ""}`, async () => {
      writeFileSync(disk, Buffer.alloc(1 << 20));
      let up = await startUpstream();
      const srv = await startServer(["--filter=retry", "nbd", `socket=${upSock}`, `shared=${shared}`, ...RETRY]);
      try {
        const c = await NbdClient.open({ path: srv.sock });
        await c.pwrite(Buffer.from("written before the restart"), 4096);
        await c.flush();
        const { next } = await bounce(up);
        // In flight while the upstream is down: held by the retry filter until it is back.
        const t0 = Date.now();
        const read = await c.pread(26, 4096);
        expect(Date.now() - t0).toBeGreaterThanOrEqual(200);
        expect(read.toString()).toBe("written before the restart");
        up = await next;
        await c.pwrite(Buffer.from("and after it"), 8192);
        await c.flush();
        expect((await c.pread(12, 8192)).toString()).toBe("and after it");
        // Again, this time with a write first.
        const second = await bounce(up, 200);
        await c.pwrite(Buffer.from("during the second"), 12288);
        up = await second.next;
        expect((await c.pread(17, 12288)).toString()).toBe("during the second");
        await c.flush();
        await c.disconnect();
        const onDisk = readFileSync(disk);
        expect(onDisk.subarray(4096, 4096 + 26).toString()).toBe("written before the restart");
        expect(onDisk.subarray(8192, 8192 + 12).toString()).toBe("and after it");
        expect(onDisk.subarray(12288, 12288 + 17).toString()).toBe("during the second");
      } finally {
        await srv.stop();
        await up.stop();
      }
    });
  }

  it("without the retry filter the same restart fails the client's request (EIO)", async () => {
    writeFileSync(disk, Buffer.alloc(1 << 20));
    let up = await startUpstream();
    const srv = await startServer(["nbd", `socket=${upSock}`]);
    try {
      const c = await NbdClient.open({ path: srv.sock });
      await c.pwrite(Buffer.from("x"), 0);
      const { next } = await bounce(up, 0);
      up = await next;
      await expect(c.pread(1, 0)).rejects.toMatchObject({ errno: C.NBD_EIO });
      await c.disconnect();
    } finally {
      await srv.stop();
      await up.stop();
    }
  });

  it.skipIf(!python)("python3-libnbd: the client's next reads and writes succeed", async () => {
    writeFileSync(disk, Buffer.alloc(1 << 20));
    let up = await startUpstream();
    const srv = await startServer(["--filter=retry", "nbd", `socket=${upSock}`, ...RETRY]);
    const script = `
import sys, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(b"python before", 0)
h.flush()
print("READY", flush=True)
sys.stdin.readline()          # the upstream is killed (and restarting) now
assert h.pread(13, 0) == b"python before"
h.pwrite(b"python after", 65536)
h.flush()
assert h.pread(12, 65536) == b"python after"
h.shutdown()
print("OK", flush=True)
`;
    const py = spawn(PYTHON, ["-c", script, srv.uri], { stdio: ["pipe", "pipe", "pipe"] });
    let stderr = "";
    py.stderr.on("data", (b: Buffer) => (stderr += b.toString()));
    const lines = createInterface({ input: py.stdout })[Symbol.asyncIterator]();
    const exited = new Promise<number | null>((r) => py.on("exit", (code) => r(code)));
    try {
      expect((await lines.next()).value).toBe("READY");
      const { next } = await bounce(up);
      py.stdin.write("go\n");
      up = await next;
      expect((await lines.next()).value, stderr).toBe("OK");
      expect(await exited).toBe(0);
      expect(readFileSync(disk).subarray(65536, 65536 + 12).toString()).toBe("python after");
    } finally {
      py.kill();
      await srv.stop();
      await up.stop();
    }
  });
});
