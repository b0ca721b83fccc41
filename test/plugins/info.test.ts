// The info plugin: the export name (raw or base64), the client's address,
// and the three clocks; in process, and the same command lines and client
// scripts under nbdkit and nbdstate (flags, export list, address format).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import createInfo, { addressText } from "../../src/plugins/info/index.js";
import type { ConnectionInfo, Plugin } from "../../src/backend/types.js";
import { freePort, makeTmpDir, removeTmpDir } from "../helpers/server.js";
import { requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";
import { exportFlags, pythonCommand, runOkUnder, runUnder, SERVERS } from "./cli-diff.js";

const ok = requireTools([TOOLS.nbdkit, TOOLS.nbdinfo]) && requirePythonLibnbd();

function conn(peer: ConnectionInfo["peer"], acceptedAt = Date.now()): ConnectionInfo {
  return { id: "conn-1", peer, tls: false, acceptedAt, disconnect() {} };
}

async function infoDisk(mode: string | undefined, exportName = "", connection?: ConnectionInfo) {
  const p: Plugin = createInfo();
  await p.load!();
  if (mode !== undefined) await p.config!("mode", mode);
  const h = await p.open(true, exportName, false, connection);
  const read = async (offset = 0, len?: number) => {
    const b = Buffer.alloc(len ?? Number(await p.getSize(h)));
    await p.pread(h, b, offset, 0);
    return b;
  };
  return { p, h, read };
}

/** Seconds and microseconds of a 12-byte clock, as a number of seconds. */
const clock = (b: Buffer) => Number(b.readBigUInt64BE(0)) + b.readUInt32BE(8) / 1e6;

describe("info plugin", () => {
  it("serves the export name by default, with mode= as its magic key", async () => {
    const { p, read } = await infoDisk(undefined, "hello wörld");
    expect(p.magicConfigKey).toBe("mode");
    expect((await read()).toString()).toBe("hello wörld");
    expect((await read(6, 3)).toString()).toBe("wö");
    expect(await p.canMultiConn!(true)).toBe(true);
    expect(await p.canWrite!(true)).toBe(false);
  });

  it("decodes a base64 export name, and refuses one that is not base64", async () => {
    expect((await (await infoDisk("base64exportname", "aGVsbG8=")).read()).toString()).toBe("hello");
    await expect(infoDisk("base64exportname", "a!b")).rejects.toThrow(/^info: export name: base64: /);
  });

  it("writes the client's address as nbdkit does", async () => {
    expect(addressText({ family: "ipv4", address: "10.1.2.3", port: 5000 })).toBe("10.1.2.3:5000");
    expect(addressText({ family: "ipv6", address: "fe80::1%eth0", port: 7 })).toBe("[fe80::1]:7");
    expect(addressText({ family: "unix" })).toBe("unix");
    expect(addressText({ family: "stdio" })).toBe("");
    const { p, read } = await infoDisk("address", "", conn({ family: "ipv6", address: "::1", port: 10809 }));
    expect((await read()).toString()).toBe("[::1]:10809");
    expect(await p.canMultiConn!(true)).toBe(false);
  });

  it("serves the wall clock, the uptime and the connection time, read afresh per request", async () => {
    const t = await infoDisk("time");
    expect(Math.abs(clock(await t.read()) - Date.now() / 1000)).toBeLessThan(2);
    const u = await infoDisk("UpTime");
    const u1 = clock(await u.read());
    await new Promise((r) => setTimeout(r, 30));
    const u2 = clock(await u.read());
    expect(u1).toBeLessThan(1);
    expect(u2 - u1).toBeGreaterThanOrEqual(0.025);
    const c = await infoDisk("conntime", "", conn({ family: "unix" }, Date.now() - 2500));
    const c1 = clock(await c.read(0, 12));
    expect(c1).toBeGreaterThanOrEqual(2.49);
    expect(c1).toBeLessThan(4);
    expect((await c.read(8, 4)).length).toBe(4);
  });

  it("serves the server's version with mode=version", async () => {
    const { p, read } = await infoDisk("version");
    expect((await read()).toString()).toMatch(/^\d+\.\d+\.\d+/);
    expect(await p.canMultiConn!(true)).toBe(true);
  });

  it("accepts nbdkit's mode spellings, refuses others", async () => {
    for (const m of ["export-name", "base64-export-name", "ADDRESS", "Time"]) await expect(infoDisk(m)).resolves.toBeTruthy();
    await expect(infoDisk("bogus")).rejects.toThrow("info: unknown mode: 'bogus'");
    expect(() => createInfo().config!("foo", "1")).toThrow("info: unknown parameter 'foo'");
  });
});

describe.skipIf(!ok)("info plugin: nbdkit and nbdstate", () => {
  let dir: string;
  beforeAll(() => void (dir = makeTmpDir("nbdstate-info-")));
  afterAll(() => removeTmpDir(dir));

  it.each(["exportname", "base64exportname", "address", "time", "uptime", "conntime"])(
    "mode=%s: the same size and flags",
    async (mode) => {
      const [k, s] = await Promise.all(SERVERS.map((srv) => exportFlags(srv, ["info", mode])));
      expect(s).toEqual(k);
    },
  );

  it("list the same exports (any name is accepted, only \"\" is listed)", async () => {
    const list = async (srv: "nbdkit" | "nbdstate") => {
      const r = await runOkUnder(srv, ["info"], 'nbdinfo --list --json "$uri"');
      return (JSON.parse(r.stdout) as { exports: Array<{ "export-name": string; "export-size": number }> }).exports.map((e) => [
        e["export-name"],
        e["export-size"],
      ]);
    };
    const [k, s] = await Promise.all(SERVERS.map(list));
    expect(s).toEqual(k);
    expect(k).toEqual([["", 0]]);
  });

  it.each(SERVERS)("%s: reflects export names and base64 export names", async (srv) => {
    const long = "x".repeat(4000);
    const script = String.raw`
import urllib.parse
def uri_for(name):
    return URI.replace("://?", ":///" + urllib.parse.quote(name, safe="") + "?", 1)
def disk(name):
    h = nbd.NBD()
    h.connect_uri(uri_for(name))
    return h.pread(h.get_size(), 0) if h.get_size() else b""
` +
      (`
eq(disk("hello"), b"hello", "name")
eq(disk("${long}"), b"${long}", "long name")
eq(disk("h\u00e9"), "h\u00e9".encode(), "utf-8 name")
print("OK")
`);
    expect((await runOkUnder(srv, ["info", "exportname"], pythonCommand(dir, script))).stdout).toMatch(/^OK$/m);
    const b64 = String.raw`
import urllib.parse
def uri_for(name):
    return URI.replace("://?", ":///" + urllib.parse.quote(name, safe="") + "?", 1)
h = nbd.NBD()
h.connect_uri(uri_for("AAECA/8="))
eq(h.pread(5, 0), b"\x00\x01\x02\x03\xff", "decoded")
h2 = nbd.NBD()
try:
    h2.connect_uri(uri_for("not base64!"))
    raise AssertionError("connected")
except nbd.Error:
    pass
print("OK")
`;
    expect((await runOkUnder(srv, ["info", "mode=base64exportname"], pythonCommand(dir, b64))).stdout).toMatch(/^OK$/m);
  });

  it.each(SERVERS)("%s: mode=address gives 'unix' on a unix socket and HOST:PORT on TCP", async (srv) => {
    const read = 'nbdsh -u "$U" -c "import sys; sys.stdout.write(h.pread(h.get_size(), 0).decode())"';
    expect((await runOkUnder(srv, ["info", "address"], read.replace("$U", "$uri"))).stdout).toBe("unix");
    for (const [host, url] of [["127.0.0.1", "127.0.0.1"], ["::1", "[::1]"]] as const) {
      const port = await freePort();
      const r = await runUnder(srv, ["info", "address"], read.replace("$U", `nbd://${url}:${port}`), { listen: ["-p", String(port), "-i", host] });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(host === "::1" ? /^\[::1\]:\d+$/ : /^127\.0\.0\.1:\d+$/);
    }
  });

  it.each(SERVERS)("%s: the clocks count from the right moments", async (srv) => {
    const script = String.raw`
import time
def clock(h):
    b = h.pread(12, 0)
    return int.from_bytes(b[:8], "big") + int.from_bytes(b[8:], "big") / 1e6
h = connect()
t1 = clock(h); time.sleep(0.1); t2 = clock(h)
assert 0.09 <= t2 - t1 < 5, (t1, t2)
print(t1)
print("OK")
`;
    const wall = await runOkUnder(srv, ["info", "time"], pythonCommand(dir, script));
    expect(Math.abs(Number(wall.stdout.split(/\s+/)[0]) - Date.now() / 1000)).toBeLessThan(10);
    const up = await runOkUnder(srv, ["info", "uptime"], pythonCommand(dir, script));
    expect(Number(up.stdout.split(/\s+/)[0])).toBeLessThan(10);
    const conn = await runOkUnder(srv, ["info", "conntime"], pythonCommand(dir, script));
    expect(Number(conn.stdout.split(/\s+/)[0])).toBeLessThan(2);
  });
});
