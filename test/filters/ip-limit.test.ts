// The ip filter's allow/deny rules and the limit filter's client cap,
// with real clients against the built CLI.
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { spawn } from "node:child_process";
import { afterEach, describe, expect, it } from "vitest";
import { matches, parseRule } from "../../src/filters/ip/rules.js";
import { startServer, type RunningServer as TestServer } from "../helpers/server.js";
import { requireTool } from "../helpers/tools.js";

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
