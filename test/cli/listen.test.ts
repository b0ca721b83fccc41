// Where the CLI listens, as a user meets it: -U next to a live server, a
// stale socket, a missing directory; -4 / -6 on TCP; --keepalive; --timeout.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { afterAll, describe, expect, it, vi } from "vitest";
import { startServer as startServerActor } from "../../src/actors/server.js";
import memory from "../../src/plugins/memory/index.js";
import { canConnect, freePort, makeTmpDir, NBDSTATE_BIN, run, runOk, sleep } from "../helpers/server.js";
import { runningStack } from "../helpers/stack.js";
import { requireTools, TOOLS } from "../helpers/tools.js";

const ok = requireTools([TOOLS.nbdkit, TOOLS.nbdinfo]);
const cli = (args: string[], timeoutMs = 15_000) => run(process.execPath, [NBDSTATE_BIN, ...args], { timeoutMs });

/** Start a long-running process; stop() kills it by its pid. */
function background(cmd: string, args: string[]) {
  const child = spawn(cmd, args, { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (b: Buffer) => (stderr += b.toString()));
  const exited = new Promise<void>((r) => child.on("exit", () => r()));
  return {
    child,
    get stderr() {
      return stderr;
    },
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}

async function waitFor(check: () => Promise<boolean> | boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await sleep(25);
  }
}

const sizeOf = async (sock: string) => Number((await runOk("nbdinfo", ["--size", `nbd+unix:///?socket=${sock}`])).stdout.trim());

describe.skipIf(!ok)("-U SOCKET", () => {
  const procs: Array<ReturnType<typeof background>> = [];
  afterAll(async () => {
    for (const p of procs) await p.stop("SIGKILL");
  });

  it("refuses a socket a live server (nbdkit) listens on, as nbdkit does, and leaves that server serving", async () => {
    const dir = makeTmpDir();
    const sock = join(dir, "s.sock");
    const kit = background("nbdkit", ["-f", "-U", sock, "memory", "1M"]);
    procs.push(kit);
    // Ready once a real client gets through (a bare connect would make nbdkit log a failed handshake).
    await waitFor(async () => existsSync(sock) && (await run("nbdinfo", ["--size", `nbd+unix:///?socket=${sock}`])).code === 0);
    const r = await cli(["-f", "-U", sock, "memory", "5M"]);
    expect(r.timedOut).toBe(false);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(`nbdstate: error: ${sock}: Address already in use`);
    expect(await sizeOf(sock)).toBe(1024 * 1024);
    // The probe did not disturb the live server (nbdkit logs a failed handshake for a probe connection).
    expect(kit.stderr).toBe("");
    await kit.stop();
  });

  it("nbdkit refuses it too (the reference behaviour)", async () => {
    const dir = makeTmpDir();
    const sock = join(dir, "s.sock");
    const first = background(process.execPath, [NBDSTATE_BIN, "-f", "-U", sock, "memory", "1M"]);
    procs.push(first);
    await waitFor(() => existsSync(sock) && canConnect({ path: sock }));
    const r = await run("nbdkit", ["-f", "-U", sock, "memory", "5M"], { timeoutMs: 15_000 });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("Address already in use");
    expect(await sizeOf(sock)).toBe(1024 * 1024);
    await first.stop();
  });

  it("replaces a stale socket nobody listens on (a killed server's)", async () => {
    const dir = makeTmpDir();
    const sock = join(dir, "s.sock");
    const kit = background("nbdkit", ["-f", "-U", sock, "memory", "1M"]);
    procs.push(kit);
    await waitFor(() => existsSync(sock) && canConnect({ path: sock }));
    await kit.stop("SIGKILL");
    expect(existsSync(sock)).toBe(true);
    const srv = background(process.execPath, [NBDSTATE_BIN, "-f", "-U", sock, "memory", "5M"]);
    procs.push(srv);
    await waitFor(() => canConnect({ path: sock }));
    expect(await sizeOf(sock)).toBe(5 * 1024 * 1024);
    await srv.stop();
  });

  it("in a missing directory: No such file or directory (not EACCES)", async () => {
    const sock = join(makeTmpDir(), "no", "such", "s.sock");
    const r = await cli(["-f", "-U", sock, "memory", "1M"]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(`nbdstate: error: ${sock}: No such file or directory`);
  });
});

/** Whether this machine has IPv6 loopback. */
function hasIpv6(): Promise<boolean> {
  return new Promise((res) => {
    const s = net.createServer();
    s.once("error", () => res(false));
    s.listen({ host: "::1", port: 0 }, () => s.close(() => res(true)));
  });
}
const ipv6 = await hasIpv6();
if (!ipv6) console.warn("SKIP: -4/-6 tests: this machine has no IPv6 loopback (::1)");

describe.skipIf(!ipv6)("-4 / -6 (TCP, connections on loopback only)", () => {
  async function families(flag: "-4" | "-6"): Promise<{ v4: boolean; v6: boolean }> {
    const port = await freePort();
    const srv = background(process.execPath, [NBDSTATE_BIN, "-f", flag, "-p", String(port), "memory", "1M"]);
    try {
      await waitFor(() => canConnect({ host: flag === "-4" ? "127.0.0.1" : "::1", port }));
      return { v4: await canConnect({ host: "127.0.0.1", port }), v6: await canConnect({ host: "::1", port }) };
    } finally {
      await srv.stop();
    }
  }

  it("-6 serves IPv6 only: [::1] connects, 127.0.0.1 is refused", async () => {
    expect(await families("-6")).toEqual({ v4: false, v6: true });
  });

  it("-4 serves IPv4 only: 127.0.0.1 connects, [::1] is refused", async () => {
    expect(await families("-4")).toEqual({ v4: true, v6: false });
  });

  it("-6 -i with an IPv4 address is an error naming both", async () => {
    const r = await cli(["-f", "-6", "-i", "127.0.0.1", "-p", String(await freePort()), "memory", "1M"]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe("nbdstate: error: -6: 127.0.0.1 is not an IPv6 address");
  });
});

describe("--keepalive and --timeout", () => {
  it("--keepalive sets SO_KEEPALIVE on accepted TCP connections", async () => {
    const stack = await runningStack(memory(), [], [["size", "1M"]]);
    const spy = vi.spyOn(net.Socket.prototype, "setKeepAlive");
    const server = await startServerActor(stack, {
      listeners: [{ kind: "tcp", host: "127.0.0.1", port: 0, keepalive: true }],
      readonly: false,
      threads: 1,
      tls: "off",
    });
    try {
      const c = net.connect(server.address.port!, "127.0.0.1");
      await new Promise<void>((r) => c.once("data", () => r()));
      c.destroy();
      expect(spy).toHaveBeenCalledWith(true);
    } finally {
      spy.mockRestore();
      await server.shutdown();
      await stack.unload();
    }
  });

  it("--timeout=1: a client that sends nothing after the greeting is dropped within seconds (default 10 s)", async () => {
    const sock = join(makeTmpDir(), "s.sock");
    const srv = background(process.execPath, [NBDSTATE_BIN, "-f", "--timeout=1", "-U", sock, "memory", "1M"]);
    try {
      await waitFor(() => existsSync(sock) && canConnect({ path: sock }));
      const t0 = Date.now();
      const c = net.connect(sock);
      c.on("data", () => {});
      await new Promise<void>((r) => c.once("close", () => r()));
      const took = Date.now() - t0;
      expect(took).toBeGreaterThanOrEqual(900);
      expect(took).toBeLessThan(5000);
    } finally {
      await srv.stop();
    }
  });

  it("--timeout must be a number of seconds", async () => {
    const r = await cli(["--timeout=soon", "memory", "1M"]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe('nbdstate: error: timeout: could not parse number: "soon"');
  });
});
