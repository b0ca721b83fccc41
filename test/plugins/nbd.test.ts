// The nbd plugin: a proxy to another NBD server (nbdkit here), compared with
// talking to that server directly: capabilities, data, structured replies,
// block status, errors, connection loss, shared=true (one upstream
// connection), dynamic-export=true (names and listing from upstream), and
// the ways to name the upstream (socket=, uri=, hostname= + port=).
import { spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NbdClient, NbdOptionError, NbdRequestError } from "../../src/client/index.js";
import createNbd from "../../src/plugins/nbd/index.js";
import * as C from "../../src/protocol/constants.js";
import {
  canConnect, freePort, isNbdkit, makeTmpDir, removeTmpDir, run, runOk, sleep, startServer, type RunningServer,
} from "../helpers/server.js";
import { PYTHON, requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";
import { startCountingProxy, startNbdkitAt, type Upstream } from "../helpers/upstream.js";

async function configured(params: [string, string][]) {
  const p = createNbd();
  for (const [k, v] of params) await p.config!(k, v);
  await p.configComplete!();
  return p;
}

describe("nbd plugin: parameters", () => {
  it("needs exactly one upstream", async () => {
    await expect(configured([])).rejects.toThrow(/an upstream server is required/);
    await expect(configured([["socket", "/x"], ["uri", "nbd://h"]])).rejects.toThrow(/only one of uri=, socket=, hostname=/);
    await expect(configured([["port", "10809"]])).rejects.toThrow(/an upstream server is required/);
    await expect(configured([["socket", "/x"], ["port", "10809"]])).rejects.toThrow(/port= needs hostname=/);
  });
  it("checks values and incompatible combinations (as nbdkit)", async () => {
    await expect(configured([["socket", "/x"], ["dynamic-export", "true"], ["shared", "true"]])).rejects.toThrow(/dynamic-export=true cannot be used with shared=true/);
    await expect(configured([["socket", "/x"], ["dynamic-export", "true"], ["export", "a"]])).rejects.toThrow(/cannot be used with export=/);
    await expect(configured([["uri", "http://x/"]])).rejects.toThrow(/not an NBD URI/);
    await expect(configured([["uri", "nbds://h/"], ["tls", "off"]])).rejects.toThrow(/tls=off cannot be used with the TLS URI/);
    await expect(configured([["socket", "/x"], ["tls-psk", "/nonexistent/k.psk"]])).rejects.toThrow(/tls-psk: cannot read \/nonexistent\/k.psk/);
    await expect(configured([["socket", "/x"], ["tls", "maybe"]])).rejects.toThrow(/tls:/);
    await expect(configured([["hostname", "h"], ["port", "99999"]])).rejects.toThrow(/not a TCP port/);
    await expect(configured([["socket", "/x"], ["shared", "maybe"]])).rejects.toThrow(/shared/);
    await expect(configured([["command", "qemu-nbd"]])).rejects.toThrow(/command: not supported/);
    await expect(configured([["socket", "/x"], ["frobnicate", "1"]])).rejects.toThrow(/unknown parameter 'frobnicate'/);
    await configured([["socket", "/x"], ["tls", "off"], ["retry", "2"], ["shared", "yes"]]);
    await configured([["hostname", "localhost"], ["port", "nbd"], ["export", "e"]]);
  });
  it("uri is the magic config key", () => {
    expect(createNbd().magicConfigKey).toBe("uri");
  });
});

const tools = requireTools([TOOLS.nbdkit, TOOLS.nbdinfo]);
const python = requirePythonLibnbd();

async function flagsOf(target: { path: string } | { host: string; port: number }, exportName = "") {
  const c = await NbdClient.open({ ...target, exportName, metaContexts: [C.BASE_ALLOCATION] });
  const r = { flags: c.transmissionFlags, size: c.size, meta: c.metaContexts.map((m) => m.name), sr: c.structuredReplies };
  await c.disconnect();
  return r;
}

async function pyOk(script: string, uri: string): Promise<string> {
  const r = await run(PYTHON, ["-c", `import errno, sys, nbd\nURI = sys.argv[1]\n${script}`, uri], { timeoutMs: 60_000 });
  if (r.code !== 0 || !/^OK$/m.test(r.stdout)) throw new Error(`python failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

describe.skipIf(isNbdkit || !tools)("nbd plugin in front of nbdkit", () => {
  let dir: string;
  const started: { stop(): Promise<unknown> }[] = [];
  beforeAll(() => {
    dir = makeTmpDir("nbdplug-");
  });
  afterAll(async () => {
    for (const s of started.reverse()) await s.stop().catch(() => {});
    removeTmpDir(dir);
  });
  let n = 0;
  async function upstream(args: string[]): Promise<Upstream> {
    const u = await startNbdkitAt(join(dir, `up${n++}.sock`), args);
    started.push(u);
    return u;
  }
  async function proxyServer(args: string[]): Promise<RunningServer> {
    const s = await startServer(["nbd", ...args]);
    started.push(s);
    return s;
  }

  const WZ = C.NBD_FLAG_SEND_WRITE_ZEROES;
  const variants: [string, string[]][] = [
    ["memory", ["memory", "64M"]],
    ["read-only", ["-r", "memory", "64M"]],
    [
      "no zero, no cache, no multi-conn",
      ["--filter=nozero", "--filter=nocache", "--filter=multi-conn", "memory", "64M",
        "zeromode=none", "cachemode=none", "multi-conn-mode=disable"],
    ],
    ["no flush (null plugin)", ["null", "1M"]],
  ];
  for (const [what, args] of variants) {
    it(`passes the upstream's capabilities through: ${what}`, async () => {
      const up = await upstream(args);
      const srv = await proxyServer([`socket=${up.sock}`]);
      const direct = await flagsOf({ path: up.sock });
      const proxied = await flagsOf({ path: srv.sock });
      expect(proxied.size).toBe(direct.size);
      expect(proxied.meta).toEqual(direct.meta);
      // Writing zeroes is emulated (with writes) when upstream cannot: as nbdkit's nbd plugin.
      // BLOCK_STATUS_PAYLOAD belongs to the connection (extended headers with nbdstate), not the export.
      const BSP = C.NBD_FLAG_BLOCK_STATUS_PAYLOAD;
      expect(proxied.flags & ~WZ & ~BSP).toBe(direct.flags & ~WZ & ~BSP);
      expect(!!(proxied.flags & WZ)).toBe(!(direct.flags & C.NBD_FLAG_READ_ONLY));
      await srv.stop();
    });
  }

  it("data, structured replies and block status pass through", async () => {
    const up = await upstream(["memory", "64M"]);
    const srv = await proxyServer([`socket=${up.sock}`]);
    const a = await NbdClient.open({ path: srv.sock, metaContexts: [C.BASE_ALLOCATION] });
    const d = await NbdClient.open({ path: up.sock, metaContexts: [C.BASE_ALLOCATION] });
    expect(a.structuredReplies).toBe(true);
    const data = Buffer.alloc(3 << 20);
    for (let i = 0; i < data.length; i += 4) data.writeUInt32BE(i, i);
    await a.pwrite(data, 1 << 20, 1 /* FUA */);
    expect((await d.pread(data.length, 1 << 20)).equals(data)).toBe(true);
    await d.pwrite(Buffer.from("from upstream"), 10 << 20);
    expect((await a.pread(13, 10 << 20)).toString()).toBe("from upstream");
    await a.zero(1 << 20, 2 << 20);
    await a.trim(4096, 1 << 20);
    await a.flush();
    await a.cache(1 << 20, 0);
    expect(await a.blockStatus(32 << 20, 0)).toEqual(await d.blockStatus(32 << 20, 0));
    expect(await a.blockStatus(32 << 20, 0, C.NBD_CMD_FLAG_REQ_ONE)).toEqual(await d.blockStatus(32 << 20, 0, C.NBD_CMD_FLAG_REQ_ONE));
    await a.disconnect();
    await d.disconnect();
    if (python) {
      await pyOk(
        `h = nbd.NBD(); h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION); h.connect_uri(URI)
assert h.get_structured_replies_negotiated()
assert h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
assert h.pread(13, 10 << 20) == b"from upstream"
buf = h.pread(4 << 20, 0)
at = (1 << 20) + 4104
assert buf[at:at + 4] == (4104).to_bytes(4, "big"), buf[at:at + 4]
assert buf[(1 << 20):(1 << 20) + 4096] == bytes(4096)   # trimmed
assert buf[(2 << 20):(3 << 20)] == bytes(1 << 20)       # zeroed
seen = []
h.block_status(16 << 20, 0, lambda ctx, off, e, err: seen.extend(e) or 0)
assert 0 < sum(seen[0::2]) <= 16 << 20 and all(f in (0, 1, 2, 3) for f in seen[1::2]), seen
h.shutdown()
print("OK")`,
        srv.uri,
      );
    }
    const info = await runOk("nbdinfo", [srv.uri]);
    expect(info.stdout).toContain("using structured packets");
    expect(info.stdout).toContain("base:allocation");
    await srv.stop();
  });

  it("zeroing is emulated with writes when the upstream cannot write zeroes", async () => {
    const up = await upstream(["--filter=nozero", "memory", "1M", "zeromode=none"]);
    const srv = await proxyServer([`socket=${up.sock}`]);
    const c = await NbdClient.open({ path: srv.sock });
    expect(c.transmissionFlags & C.NBD_FLAG_SEND_WRITE_ZEROES).toBeTruthy();
    expect(c.transmissionFlags & C.NBD_FLAG_SEND_FAST_ZERO).toBe(0);
    await c.pwrite(Buffer.alloc(8192, 0xee), 0);
    await c.zero(4096, 2048);
    const got = await c.pread(8192, 0);
    expect(got.subarray(0, 2048).every((b) => b === 0xee)).toBe(true);
    expect(got.subarray(2048, 6144).every((b) => b === 0)).toBe(true);
    expect(got.subarray(6144).every((b) => b === 0xee)).toBe(true);
    await c.disconnect();
    await srv.stop();
  });

  it("upstream errors reach the client as the same NBD error", async () => {
    const up = await upstream([
      "--filter=error", "memory", "1M",
      "error-pwrite=ENOSPC", "error-pwrite-rate=100%",
      "error-pread=EPERM", "error-pread-rate=100%",
      "error-trim=EINVAL", "error-trim-rate=100%",
      "error-zero=ESHUTDOWN", "error-zero-rate=100%",
    ]);
    const srv = await proxyServer([`socket=${up.sock}`]);
    const c = await NbdClient.open({ path: srv.sock });
    const errno = (p: Promise<unknown>) =>
      p.then(
        () => 0,
        (e: unknown) => (e instanceof NbdRequestError ? e.errno : -1),
      );
    expect(await errno(c.pwrite(Buffer.alloc(512), 0))).toBe(C.NBD_ENOSPC);
    expect(await errno(c.pread(512, 0))).toBe(C.NBD_EPERM);
    expect(await errno(c.trim(512, 0))).toBe(C.NBD_EINVAL);
    expect(await errno(c.zero(512, 0))).toBe(C.NBD_ESHUTDOWN);
    expect(await errno(c.flush())).toBe(0); // the connection is still usable
    await c.disconnect();
    if (python) {
      await pyOk(
        `h = nbd.NBD(); h.connect_uri(URI)
for fn, args, want in [(h.pwrite, (b"x" * 512, 0), errno.ENOSPC), (h.pread, (512, 0), errno.EPERM)]:
    try:
        fn(*args); raise AssertionError("no error")
    except nbd.Error as e:
        assert e.errnum == want, (e.errnum, e.string)
h.shutdown()
print("OK")`,
        srv.uri,
      );
    }
    await srv.stop();
  });

  it("connection loss upstream: requests fail with EIO; the server and new clients carry on", async () => {
    const up = await upstream(["memory", "1M"]);
    const proxy = await startCountingProxy(join(dir, "loss.sock"), up.sock);
    started.push({ stop: () => proxy.close() });
    const srv = await proxyServer([`socket=${proxy.path}`]);
    const c = await NbdClient.open({ path: srv.sock });
    await c.pwrite(Buffer.from("kept"), 0);
    proxy.dropAll();
    await sleep(50);
    await expect(c.pread(4, 0)).rejects.toMatchObject({ errno: C.NBD_EIO });
    await expect(c.pwrite(Buffer.from("x"), 0)).rejects.toMatchObject({ errno: C.NBD_EIO });
    await c.disconnect();
    const again = await NbdClient.open({ path: srv.sock });
    expect((await again.pread(4, 0)).toString()).toBe("kept");
    await again.disconnect();
    expect(proxy.connections).toBe(2);
    await srv.stop();
  });

  it("one upstream connection per client connection without shared; exactly one with shared=true", async () => {
    const up = await upstream(["memory", "16M"]);
    for (const shared of [false, true]) {
      const proxy = await startCountingProxy(join(dir, `count-${shared}.sock`), up.sock);
      started.push({ stop: () => proxy.close() });
      const srv = await proxyServer([`socket=${proxy.path}`, `shared=${shared}`]);
      expect(proxy.connections).toBe(0); // opened lazily
      const clients = await Promise.all(Array.from({ length: 6 }, () => NbdClient.open({ path: srv.sock })));
      await Promise.all(clients.map((c, i) => c.pwrite(Buffer.alloc(4096, i + 1), i * 4096)));
      for (const c of clients) {
        const all = await c.pread(6 * 4096, 0);
        for (let i = 0; i < 6; i++) expect(all[i * 4096]).toBe(i + 1);
      }
      await Promise.all(clients.map((c) => c.disconnect()));
      if (python) {
        await pyOk(
          `hs = [nbd.NBD() for i in range(3)]
for h in hs: h.connect_uri(URI)
hs[0].pwrite(b"py" * 100, 8 << 20)
for h in hs: assert h.pread(200, 8 << 20) == b"py" * 100
for h in hs: h.shutdown()
print("OK")`,
          srv.uri,
        );
      }
      if (shared) {
        expect(proxy.connections).toBe(1);
        expect(proxy.open).toBe(1); // kept until unload
      } else {
        expect(proxy.connections).toBe(6 + (python ? 3 : 0));
      }
      await srv.stop();
      if (shared) {
        await sleep(100);
        expect(proxy.open).toBe(0); // closed at unload
      }
    }
  });

  it("dynamic-export=true: the client's export name goes upstream, the listing comes from upstream", async () => {
    const exports = join(dir, "exports");
    mkdirSync(exports);
    writeFileSync(join(exports, "a.img"), Buffer.alloc(65536, "A"));
    writeFileSync(join(exports, "b.img"), Buffer.alloc(131072, "B"));
    const up = await upstream(["file", `dir=${exports}`]);
    const dyn = await proxyServer([`socket=${up.sock}`, "dynamic-export=true"]);
    const lister = await NbdClient.connect({ path: dyn.sock });
    const names = (await lister.list()).map((e) => e.name).sort();
    await lister.abort();
    expect(names).toEqual(["a.img", "b.img"]);
    const list = await runOk("nbdinfo", ["--list", dyn.uri]);
    expect(list.stdout).toContain("a.img");
    expect(list.stdout).toContain("b.img");
    for (const [name, ch, size] of [["a.img", "A", 65536], ["b.img", "B", 131072]] as const) {
      const c = await NbdClient.open({ path: dyn.sock, exportName: name });
      expect(c.size).toBe(size);
      expect((await c.pread(4, 100)).toString()).toBe(ch.repeat(4));
      await c.disconnect();
    }
    // Without it, every client gets export= whatever it asks for; the listing is the default only.
    const fixed = await proxyServer([`socket=${up.sock}`, "export=b.img"]);
    const c = await NbdClient.open({ path: fixed.sock, exportName: "a.img" });
    expect((await c.pread(4, 0)).toString()).toBe("BBBB");
    await c.disconnect();
    const l2 = await NbdClient.connect({ path: fixed.sock });
    expect((await l2.list()).map((e) => e.name)).toEqual([""]);
    await l2.abort();
    await dyn.stop();
    await fixed.stop();
  });

  it("names the upstream by uri= (also as a bare value), or by hostname= and port= (TCP)", async () => {
    const up = await upstream(["memory", "2M"]);
    const port = await freePort();
    const tcp = spawn("nbdkit", ["-f", "-i", "127.0.0.1", "-p", String(port), "memory", "3M"], { stdio: "ignore" });
    started.push({ stop: async () => void tcp.kill() });
    for (let i = 0; i < 200 && !(await canConnect({ host: "127.0.0.1", port })); i++) await sleep(25);
    const cases: [string[], number][] = [
      [[`uri=nbd+unix:///?socket=${up.sock}`], 2 << 20],
      [[`nbd+unix:///?socket=${up.sock}`], 2 << 20],
      [[`nbd://127.0.0.1:${port}`], 3 << 20],
      [["hostname=127.0.0.1", `port=${port}`], 3 << 20],
    ];
    for (const [args, size] of cases) {
      const srv = await proxyServer(args);
      const c = await NbdClient.open({ path: srv.sock });
      expect(c.size).toBe(size);
      await c.disconnect();
      await srv.stop();
    }
  });

  it("an upstream that is not there: the client's open fails with a clear message", async () => {
    const srv = await proxyServer([`socket=${join(dir, "nobody.sock")}`]);
    const err = await NbdClient.open({ path: srv.sock }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(NbdOptionError);
    expect((err as Error).message).toMatch(/nbd: cannot connect to unix socket .*nobody\.sock/);
    await srv.stop();
  });
});
