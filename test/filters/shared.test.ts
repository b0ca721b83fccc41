// The shared filter: one context below per (export, mode) for every client
// connection, opened once (lazily, or at afterFork with shared-open=eager)
// and closed once, at unload. In-process through the Stack, then through
// the command line with real clients (src/client, python3-libnbd, qemu-io,
// nbdcopy), including 8 clients in front of the nbd plugin whose upstream
// sees exactly one connection.
import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stack } from "../../src/backend/stack.js";
import type { Context, Filter, LowerBackend } from "../../src/backend/types.js";
import { NbdClient } from "../../src/client/index.js";
import createShared from "../../src/filters/shared/index.js";
import createMemory from "../../src/plugins/memory/index.js";
import * as C from "../../src/protocol/constants.js";
import { isNbdkit, makeTmpDir, removeTmpDir, run, runOk, startServer, type RunningServer } from "../helpers/server.js";
import { PYTHON, requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";
import { startCountingProxy, startNbdkitAt, type CountingProxy, type Upstream } from "../helpers/upstream.js";
import { createCountingPlugin } from "./counting-plugin.js";
import { runningStack } from "../helpers/stack.js";

async function running(plugin = createCountingPlugin(), filters: Filter[] = [createShared()], params: [string, string][] = []) {
  const stack = await runningStack(plugin, filters, params);
  return { stack, plugin };
}

const bytes = (s: string) => Buffer.from(s);
async function read(ctx: Context, n: number, off: number): Promise<string> {
  const b = Buffer.alloc(n);
  await ctx.pread(b, off, 0);
  return b.toString();
}

describe("shared filter (in-process Stack)", () => {
  it("N clients come and go: the shared context opens once, and closes once, at unload", async () => {
    const { stack, plugin } = await running();
    expect(plugin.counts.open).toBe(0); // lazy: nothing before the first client
    for (let round = 0; round < 3; round++) {
      const conns = await Promise.all(Array.from({ length: 8 }, () => stack.open(false, "", false)));
      expect(plugin.counts).toEqual({ open: 1, prepare: 1, finalize: 0, close: 0 });
      expect(stack.shared.describe()).toEqual([{ key: "counting:rw:", state: "open", refs: 8 }]);
      await Promise.all(conns.map((c) => stack.close(c)));
    }
    // Nobody connected: still open, no reference held.
    expect(plugin.counts).toEqual({ open: 1, prepare: 1, finalize: 0, close: 0 });
    expect(stack.shared.describe()).toEqual([{ key: "counting:rw:", state: "open", refs: 0 }]);
    await stack.unload();
    expect(plugin.counts).toEqual({ open: 1, prepare: 1, finalize: 1, close: 1 });
  });

  it("every connection's writes are visible to the others at once (the plugin keeps data per context)", async () => {
    const { stack, plugin } = await running();
    const conns = await Promise.all(Array.from({ length: 8 }, () => stack.open(false, "", false)));
    await Promise.all(conns.map((c, i) => c.ctx.pwrite(bytes(`client${i}`), i * 100, 0)));
    for (const c of conns) {
      for (let i = 0; i < 8; i++) expect(await read(c.ctx, 7, i * 100)).toBe(`client${i}`);
    }
    // Without the filter, the same plugin gives each connection its own bytes.
    const plain = await running(createCountingPlugin(), []);
    const a = await plain.stack.open(false, "", false);
    const b = await plain.stack.open(false, "", false);
    await a.ctx.pwrite(bytes("mine"), 0, 0);
    expect(await read(b.ctx, 4, 0)).toBe("\0\0\0\0");
    await plain.stack.close(a);
    await plain.stack.close(b);
    await plain.stack.unload();
    for (const c of conns) await stack.close(c);
    await stack.unload();
    expect(plugin.counts.close).toBe(1);
  });

  it("advertises multi-conn, and a flush from any connection flushes the one context", async () => {
    const { stack, plugin } = await running();
    const [a, b] = [await stack.open(false, "", false), await stack.open(false, "", false)];
    expect(await plugin.canMultiConn!({} as never)).toBe(false);
    expect(await a.ctx.canMultiConn()).toBe(true);
    await b.ctx.flush(0);
    expect(plugin.events.filter((e) => e.startsWith("flush"))).toEqual(["flush #1"]);
    await stack.close(a);
    await stack.close(b);
    await stack.unload();
  });

  it("one context per export name and per read-only-ness", async () => {
    const { stack, plugin } = await running();
    const opened = [
      await stack.open(false, "", false),
      await stack.open(false, "a", false),
      await stack.open(true, "a", false),
      await stack.open(false, "a", false),
      await stack.open(true, "a", false),
    ];
    expect(plugin.counts.open).toBe(3);
    expect([...plugin.byKey.keys()].sort()).toEqual(["ro:a", "rw:", "rw:a"]);
    expect(await opened[2]!.ctx.canWrite()).toBe(false);
    expect(await opened[1]!.ctx.canWrite()).toBe(true);
    for (const o of opened) await stack.close(o);
    await stack.unload();
    for (const k of plugin.byKey.values()) expect(k).toEqual({ open: 1, prepare: 1, finalize: 1, close: 1 });
  });

  it("shared-readonly=true: read-only and read-write clients share one read-only context", async () => {
    const { stack, plugin } = await running(createCountingPlugin(), [createShared()], [["shared-readonly", "true"]]);
    const a = await stack.open(false, "", false);
    const b = await stack.open(true, "", false);
    expect(plugin.counts.open).toBe(1);
    expect([...plugin.byKey.keys()]).toEqual(["ro:"]);
    expect(await a.ctx.canWrite()).toBe(false);
    await stack.close(a);
    await stack.close(b);
    await stack.unload();
  });

  it("shared-open=eager opens the default export's context at afterFork; clients reuse it", async () => {
    const plugin = createCountingPlugin();
    plugin.defaultExport = () => "disk0";
    const stack = new Stack(plugin, [createShared()]);
    await stack.load();
    await stack.config("shared-open", "eager");
    await stack.configComplete();
    await stack.getReady();
    expect(plugin.counts.open).toBe(0);
    await stack.afterFork();
    expect(plugin.counts.open).toBe(1);
    expect([...plugin.byKey.keys()]).toEqual(["rw:disk0"]);
    const c = await stack.open(false, "disk0", false);
    expect(plugin.counts.open).toBe(1);
    await stack.close(c);
    await stack.unload();
    expect(plugin.counts).toEqual({ open: 1, prepare: 1, finalize: 1, close: 1 });
  });

  it("shared-open=eager: a failing open stops the server from starting", async () => {
    const plugin = createCountingPlugin();
    plugin.failOpens = 1;
    const stack = new Stack(plugin, [createShared()]);
    await stack.load();
    await stack.config("shared-open", "eager");
    await stack.configComplete();
    await stack.getReady();
    await expect(stack.afterFork()).rejects.toThrow(/open failed/);
    await stack.unload();
  });

  it("rejects bad parameters and passes the others to the plugin", async () => {
    const fresh = async () => {
      const s = new Stack(createMemory(), [createShared()]);
      await s.load();
      return s;
    };
    await expect((await fresh()).config("shared-open", "sometimes")).rejects.toThrow(/shared-open must be 'lazy' or 'eager'/);
    await expect((await fresh()).config("shared-readonly", "perhaps")).rejects.toThrow(/shared-readonly/);
    await (await fresh()).config("size", "1M");
  });

  it("a request in flight when the server unloads finishes before the shared context closes", async () => {
    const { stack, plugin } = await running();
    const c = await stack.open(false, "", false);
    plugin.readDelay = 100;
    const b = Buffer.alloc(4);
    const inflight = c.ctx.pread(b, 0, 0);
    const unloaded = stack.unload();
    await expect(inflight).resolves.toBeUndefined();
    await unloaded;
    const ev = plugin.events;
    expect(ev.indexOf("pread #1")).toBeLessThan(ev.indexOf("finalize #1"));
    expect(ev.indexOf("finalize #1")).toBeLessThan(ev.indexOf("close #1"));
    // The connection's reference outlived the context: requests get ESHUTDOWN, not a closed handle.
    await expect(c.ctx.pread(b, 0, 0)).rejects.toMatchObject({ errno: C.NBD_ESHUTDOWN });
    await stack.close(c);
    expect(plugin.counts.close).toBe(1);
  });
});

describe("filter-owned contexts: only from afterFork until unload (in-process Stack)", () => {
  /** A filter that remembers the layer below as its afterFork saw it. */
  function grabbing(): Filter & { lower?: LowerBackend } {
    const f: Filter & { lower?: LowerBackend } = {
      name: "grab",
      afterFork(lower) {
        f.lower = lower;
      },
    };
    return f;
  }

  it("before afterFork, opening a context below fails with a clear message", async () => {
    const grab = grabbing();
    const stack = new Stack(createMemory(), [grab]);
    const lower = stack.layers[1]!.asLower(); // what grab will be given
    await stack.load();
    await stack.config("size", "1M");
    await expect(lower.open({})).rejects.toThrow(/memory: a filter may open its own context only from afterFork until unload \(layer is loaded\)/);
    await stack.configComplete();
    await expect(lower.open({ shared: true })).rejects.toThrow(/only from afterFork until unload \(layer is configured\)/);
    await stack.getReady();
    await expect(lower.open({ exportName: "" })).rejects.toThrow(/only from afterFork until unload \(layer is ready\)/);
    await stack.afterFork();
    expect(grab.lower).toBe(lower);
    const ctx = await lower.open({});
    expect(await ctx.getSize()).toBe(1 << 20);
    await lower.close(ctx);
    await stack.unload();
  });

  it("after unload, opening a context below fails with a clear message", async () => {
    const grab = grabbing();
    const stack = await runningStack(createMemory(), [grab], [["size", "1M"]]);
    await stack.unload();
    await expect(grab.lower!.open({})).rejects.toThrow(/memory: a filter may open its own context only from afterFork until unload \(layer is unloaded\)/);
    await expect(grab.lower!.open({ shared: true })).rejects.toThrow(/\(layer is unloaded\)/);
  });

  it("the shared filter cannot serve a connection before afterFork", async () => {
    const stack = new Stack(createCountingPlugin(), [createShared()]);
    await stack.load();
    await stack.configComplete();
    await stack.getReady();
    await expect(stack.open(false, "", false)).rejects.toThrow(/only from afterFork until unload/);
  });

  it("what a filter left open below is closed at unload", async () => {
    const grab = grabbing();
    const plugin = createCountingPlugin();
    const stack = await runningStack(plugin, [grab]);
    await grab.lower!.open({});
    await grab.lower!.open({ shared: true });
    expect(plugin.counts.open).toBe(2);
    await stack.unload();
    expect(plugin.counts).toEqual({ open: 2, prepare: 2, finalize: 2, close: 2 });
  });
});

// ---------------------------------------------------------------------------
// Through the command line, with real clients.

const python = requirePythonLibnbd();
const tools = requireTools([TOOLS.nbdkit, TOOLS.qemuIo, TOOLS.nbdcopy]);

/** A plugin file loaded by path: logs open/close/... lines to countfile=FILE, data per handle. */
const COUNT_PLUGIN = `
import { appendFileSync } from "node:fs";
let file;
let next = 1;
const size = 1 << 20;
export default {
  name: "countfile",
  config(k, v) { if (k === "countfile") file = v; else throw new Error("unknown " + k); },
  configComplete() { if (!file) throw new Error("countfile= is required"); },
  open(readonly, name) { const h = { id: next++, data: Buffer.alloc(size) }; appendFileSync(file, "open\\n"); return h; },
  finalize(h) { appendFileSync(file, "finalize\\n"); },
  close(h) { appendFileSync(file, "close\\n"); },
  unload() { if (file) appendFileSync(file, "unload\\n"); },
  getSize() { return size; },
  pread(h, buf, off) { h.data.copy(buf, 0, off, off + buf.length); },
  pwrite(h, buf, off) { buf.copy(h.data, off); },
};
`;

describe.skipIf(isNbdkit || !python || !tools)("shared filter through the command line", () => {
  let dir: string;
  beforeAll(() => {
    dir = makeTmpDir("shared-");
  });
  afterAll(() => removeTmpDir(dir));

  it("a plugin loaded by path: clients come and go, one open, one close at shutdown", async () => {
    const pluginFile = join(dir, "count-plugin.mjs");
    const countFile = join(dir, "counts.txt");
    writeFileSync(pluginFile, COUNT_PLUGIN);
    writeFileSync(countFile, "");
    const srv = await startServer(["--filter=shared", pluginFile, `countfile=${countFile}`]);
    try {
      const lines = () => readFileSync(countFile, "utf8").split("\n").filter(Boolean);
      // src/client, one after the other and several at once.
      const first = await NbdClient.open({ path: srv.sock });
      await first.pwrite(bytes("shared!"), 4096);
      await first.disconnect();
      const many = await Promise.all(Array.from({ length: 4 }, () => NbdClient.open({ path: srv.sock })));
      for (const c of many) expect((await c.pread(7, 4096)).toString()).toBe("shared!");
      await Promise.all(many.map((c) => c.disconnect()));
      // python3-libnbd and qemu-io see the same bytes.
      await pyOk(
        `h = nbd.NBD(); h.connect_uri(URI)
assert h.can_multi_conn()
assert h.pread(7, 4096) == b"shared!"
h.pwrite(b"python", 8192)
h.shutdown()
print("OK")`,
        srv.uri,
      );
      const q = await runOk("qemu-io", ["-f", "raw", "-c", "read -v 8192 6", srv.uri]);
      expect(q.stdout).toContain("python");
      expect(lines()).toEqual(["open"]);
    } finally {
      const st = await srv.stop();
      expect(st.killed).toBe(false);
    }
    expect(readFileSync(countFile, "utf8").split("\n").filter(Boolean)).toEqual(["open", "finalize", "close", "unload"]);
  });

  describe("8 clients in front of the nbd plugin: the upstream sees one connection", () => {
    let upstream: Upstream;
    let proxy: CountingProxy;
    let srv: RunningServer;
    beforeAll(async () => {
      // Upstream multi-conn disabled, so the CAN_MULTI_CONN seen below is the filter's.
      upstream = await startNbdkitAt(join(dir, "up.sock"), ["--filter=multi-conn", "memory", "64M", "multi-conn-mode=disable"]);
      proxy = await startCountingProxy(join(dir, "proxy.sock"), upstream.sock);
      srv = await startServer(["--filter=shared", "nbd", `socket=${proxy.path}`]);
    });
    afterAll(async () => {
      await srv?.stop();
      await proxy?.close();
      await upstream?.stop();
    });

    it("8 src/client connections at once: each one's writes are visible to all the others", async () => {
      const direct = await NbdClient.open({ path: upstream.sock });
      expect(direct.transmissionFlags & C.NBD_FLAG_CAN_MULTI_CONN).toBe(0);
      await direct.disconnect();
      const clients = await Promise.all(Array.from({ length: 8 }, () => NbdClient.open({ path: srv.sock })));
      for (const c of clients) expect(c.transmissionFlags & C.NBD_FLAG_CAN_MULTI_CONN).toBeTruthy();
      const region = (i: number) => Buffer.alloc(65536, i + 1);
      await Promise.all(clients.map((c, i) => c.pwrite(region(i), i * 65536)));
      await Promise.all(
        clients.map(async (c) => {
          const all = await c.pread(8 * 65536, 0);
          for (let i = 0; i < 8; i++) expect(all.subarray(i * 65536, (i + 1) * 65536).equals(region(i))).toBe(true);
        }),
      );
      // A write by one, then at once a read by another (no flush in between).
      for (let i = 0; i < 8; i++) {
        const tag = randomBytes(512);
        await clients[i]!.pwrite(tag, 1 << 20);
        expect((await clients[(i + 3) % 8]!.pread(512, 1 << 20)).equals(tag)).toBe(true);
      }
      await Promise.all(clients.map((c) => c.disconnect()));
      expect(proxy.connections).toBe(1);
    });

    it("8 python3-libnbd handles at once, then qemu-io and nbdcopy (4 connections)", async () => {
      await pyOk(
        `hs = []
for i in range(8):
    h = nbd.NBD(); h.connect_uri(URI); hs.append(h)
for i, h in enumerate(hs):
    h.pwrite(bytes([0x40 + i]) * 4096, (4 << 20) + i * 4096)
for h in hs:
    assert h.can_multi_conn()
    for i in range(8):
        assert h.pread(4096, (4 << 20) + i * 4096) == bytes([0x40 + i]) * 4096, i
hs[5].flush()
for h in hs: h.shutdown()
print("OK")`,
        srv.uri,
      );
      await runOk("qemu-io", ["-f", "raw", "-c", "write -P 0x5a 8M 64k", srv.uri]);
      await runOk("qemu-io", ["-f", "raw", "-c", "read -P 0x5a 8M 64k", srv.uri]);
      const src = join(dir, "random.img");
      const data = randomBytes(4 << 20);
      writeFileSync(src, data);
      // nbdcopy opens several connections because multi-conn is advertised.
      await runOk("nbdcopy", ["--connections=4", src, srv.uri]);
      const c = await NbdClient.open({ path: srv.sock });
      expect((await c.pread(4 << 20, 0)).equals(data)).toBe(true);
      await c.disconnect();
      expect(proxy.connections).toBe(1);
      expect(proxy.open).toBe(1); // kept open while the server runs
    });
  });
});

async function pyOk(script: string, uri: string): Promise<void> {
  const r = await run(PYTHON, ["-c", `import sys, nbd\nURI = sys.argv[1]\n${script}`, uri], { timeoutMs: 60_000 });
  if (r.code !== 0 || !/^OK$/m.test(r.stdout)) throw new Error(`python failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
}

