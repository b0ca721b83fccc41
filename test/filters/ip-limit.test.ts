// The ip filter's allow/deny rules and the limit filter's client cap,
// with real clients against the built CLI.
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { matches, parseRule } from "../../src/filters/ip/rules.js";
import { peerOf } from "../../src/actors/peer.js";
import { openClient } from "../../src/client/index.js";
import { makeTmpDir, removeTmpDir, startServer, type RunningServer as TestServer } from "../helpers/server.js";
import { requireTool, PYTHON } from "../helpers/tools.js";

const run = promisify(execFile);
const haveNbdinfo = requireTool("nbdinfo", "libnbd-bin");

describe("ip filter rules", () => {
  it("matches CIDR ranges of IPv4 and IPv6, and IPv4-mapped addresses as IPv4", async () => {
    expect(await matches(parseRule("10.0.0.0/8"), { family: "ipv4", address: "10.1.2.3" })).toBe(true);
    expect(await matches(parseRule("10.0.0.0/8"), { family: "ipv4", address: "11.1.2.3" })).toBe(false);
    expect(await matches(parseRule("127.0.0.1"), { family: "ipv4", address: "127.0.0.1" })).toBe(true);
    expect(await matches(parseRule("::1"), { family: "ipv6", address: "::1" })).toBe(true);
    expect(await matches(parseRule("fe80::/10"), { family: "ipv6", address: "fe80::1234:5678" })).toBe(true);
    expect(await matches(parseRule("fe80::/10"), { family: "ipv6", address: "2001:db8::1" })).toBe(false);
    expect(await matches(parseRule("2001:db8::/32"), { family: "ipv4", address: "127.0.0.1" })).toBe(false);
    expect(await matches(parseRule("anyunix"), { family: "unix" })).toBe(true);
    expect(await matches(parseRule("allipv4"), { family: "unix" })).toBe(false);
  });

  it("matches uid/gid/pid of unix peers only", async () => {
    const peer = { family: "unix" as const, credentials: async () => ({ pid: 42, uid: 1000, gid: 100 }) };
    expect(await matches(parseRule("uid:1000"), peer)).toBe(true);
    expect(await matches(parseRule("gid:100"), peer)).toBe(true);
    expect(await matches(parseRule("pid:41"), peer)).toBe(false);
    expect(await matches(parseRule("uid:1000"), { family: "ipv4", address: "127.0.0.1" })).toBe(false);
  });

  it("refuses what it cannot parse", () => {
    expect(() => parseRule("300.1.1.1")).toThrow(/cannot parse/);
    expect(() => parseRule("10.0.0.0/33")).toThrow(/prefix/);
    expect(() => parseRule("nonsense")).toThrow(/cannot parse/);
  });
});

/** A unix socket server in a temp dir; resolves each accepted socket's peer credentials. */
async function credentialsOfClients(connect: (path: string) => Promise<() => void>) {
  const dir = makeTmpDir("nbdstate-cred-");
  const path = join(dir, "s.sock");
  const got = new Promise<{ pid: number; uid: number; gid: number } | null>((resolve, reject) => {
    const srv = net.createServer((sock) => {
      const creds = peerOf(sock).credentials!();
      creds.then((c) => {
        sock.destroy();
        srv.close();
        resolve(c);
      }, reject);
    });
    srv.listen(path, () => {
      connect(path).then((done) => got.finally(done), reject);
    });
  });
  try {
    return await got;
  } finally {
    removeTmpDir(dir);
  }
}

describe("unix socket peer credentials (SO_PEERCRED)", () => {
  it("are the connecting process's own: this test process", async () => {
    const c = await credentialsOfClients(async (path) => {
      const s = net.connect(path);
      return () => s.destroy();
    });
    expect(c).toEqual({ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
  });

  it("are the connecting process's own: a child process", async () => {
    let pid = 0;
    const c = await credentialsOfClients(async (path) => {
      const child = spawn(PYTHON, ["-c", "import socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\nsys.stdin.read()", path], { stdio: ["pipe", "ignore", "inherit"] });
      pid = child.pid!;
      return () => child.stdin!.end();
    });
    expect(c).toEqual({ pid, uid: process.getuid!(), gid: process.getgid!() });
  });
});

describe.skipIf(!haveNbdinfo)("ip and limit filters with real clients", () => {
  let server: TestServer | null = null;
  afterEach(async () => {
    await server?.stop();
    server = null;
  });

  const info = (uri: string) => run("nbdinfo", ["--size", uri], { timeout: 10000 });

  it("deny=all refuses a unix client before the handshake; the server keeps serving allowed ones", async () => {
    server = await startServer(["--filter=ip", "memory", "1M", "deny=all"]);
    await expect(info(server.uri)).rejects.toThrow();
    await server.stop();
    server = await startServer(["--filter=ip", "memory", "1M", "allow=anyunix", "deny=all"]);
    expect((await info(server.uri)).stdout.trim()).toBe("1048576");
  });

  it("allow=uid:<own uid> deny=all lets the current user in; deny=uid:<own uid> keeps it out", async () => {
    const uid = process.getuid!();
    server = await startServer(["--filter=ip", "memory", "1M", `allow=uid:${uid}`, "deny=all"]);
    expect((await info(server.uri)).stdout.trim()).toBe("1048576");
    await server.stop();
    server = await startServer(["--filter=ip", "memory", "1M", `deny=uid:${uid}`]);
    await expect(info(server.uri)).rejects.toThrow();
  });

  it("pid:<this process> lets this process in and keeps out another (nbdinfo, a child)", async () => {
    server = await startServer(["--filter=ip", "memory", "1M", `allow=pid:${process.pid}`, "deny=all"]);
    const c = await openClient({ path: server.sock });
    expect(c.size).toBe(1048576);
    await c.disconnect();
    await expect(info(server.uri)).rejects.toThrow();
    await server.stop();
    server = await startServer(["--filter=ip", "memory", "1M", `allow=gid:${process.getgid!()}`, `deny=pid:${process.pid}`]);
    // allow is checked first: the gid lets everyone of this group in.
    expect((await info(server.uri)).stdout.trim()).toBe("1048576");
  });

  it("without koffi, uid/pid rules still work (ss and /proc)", async () => {
    const dir = makeTmpDir("nbdstate-nokoffi-");
    const pre = join(dir, "no-koffi.cjs");
    writeFileSync(pre, "const M = require('node:module'); const l = M._load; M._load = function (r, ...a) { if (r === 'koffi') throw new Error('no koffi'); return l.call(this, r, ...a); };");
    try {
      const env = { ...process.env, NODE_OPTIONS: `--require ${pre}` };
      server = await startServer(["--filter=ip", "memory", "1M", `allow=uid:${process.getuid!()}`, "deny=all"], { env });
      expect((await info(server.uri)).stdout.trim()).toBe("1048576");
      await server.stop();
      server = await startServer(["--filter=ip", "memory", "1M", `deny=uid:${process.getuid!()}`], { env });
      await expect(info(server.uri)).rejects.toThrow();
    } finally {
      removeTmpDir(dir);
    }
  });

  it("limit=1: a second client is refused while the first is connected, and let in after", async () => {
    server = await startServer(["--filter=limit", "memory", "1M", "limit=1"]);
    const holder = spawn("/usr/bin/python3", ["-c", [
      "import nbd, sys, time",
      "h = nbd.NBD()",
      `h.connect_uri(${JSON.stringify(server.uri)})`,
      "print('connected', flush=True)",
      "sys.stdin.read()",
    ].join("\n")], { stdio: ["pipe", "pipe", "inherit"] });
    await new Promise<void>((resolve, reject) => {
      holder.stdout!.on("data", (d: Buffer) => d.toString().includes("connected") && resolve());
      holder.on("exit", (c) => reject(new Error(`holder exited ${c}`)));
    });
    await expect(info(server.uri)).rejects.toThrow();
    holder.stdin!.end();
    await new Promise((r) => holder.on("exit", r));
    expect((await info(server.uri)).stdout.trim()).toBe("1048576");
  });
});
