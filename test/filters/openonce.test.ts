// The openonce filter (nbdkit >= 1.44; nbdkit 1.32 has none, so there is
// no differential test): the layer below is opened once per export,
// read-only-ness and TLS, and every client shares that context until the
// server exits. In-process with a plugin that keeps its data per context,
// then 8 real clients in front of the nbd plugin whose upstream sees one
// connection.
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import createOpenOnce from "../../src/filters/openonce/index.js";
import { makeTmpDir, startServer } from "../helpers/server.js";
import { runningStack } from "../helpers/stack.js";
import { requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";
import { startCountingProxy, startNbdkitAt } from "../helpers/upstream.js";
import { createCountingPlugin } from "./counting-plugin.js";
import { py } from "./state-helpers.js";

describe("openonce filter (in-process Stack)", () => {
  it("8 clients share one context: one open, each write seen by all, multi-conn; closed once, at unload", async () => {
    const plugin = createCountingPlugin();
    const stack = await runningStack(plugin, [createOpenOnce()]);
    const conns = await Promise.all(Array.from({ length: 8 }, () => stack.open(false, "", false)));
    expect(plugin.counts).toEqual({ open: 1, prepare: 1, finalize: 0, close: 0 });
    await Promise.all(conns.map((c, i) => c.ctx.pwrite(Buffer.from(`c${i}`), i * 10, 0)));
    const b = Buffer.alloc(2);
    for (let i = 0; i < 8; i++) {
      await conns[7 - i]!.ctx.pread(b, i * 10, 0);
      expect(b.toString()).toBe(`c${i}`);
    }
    expect(await conns[0]!.ctx.canMultiConn()).toBe(true);
    for (const c of conns) await stack.close(c);
    expect(plugin.counts.close).toBe(0); // stays open while the server runs
    const again = await stack.open(false, "", false);
    await again.ctx.pread(b, 30, 0);
    expect(b.toString()).toBe("c3");
    await stack.close(again);
    await stack.unload();
    expect(plugin.counts).toEqual({ open: 1, prepare: 1, finalize: 1, close: 1 });
  });

  it("one context per export, per read-only-ness and per TLS: a TLS client never shares a plain one's", async () => {
    const plugin = createCountingPlugin();
    const stack = await runningStack(plugin, [createOpenOnce()]);
    const opened = [
      await stack.open(false, "a", false),
      await stack.open(false, "a", false),
      await stack.open(false, "b", false),
      await stack.open(true, "a", false),
      await stack.open(false, "a", true),
      await stack.open(false, "a", true),
    ];
    expect(plugin.counts.open).toBe(4);
    expect(stack.shared.describe().map((d) => d.key).sort()).toEqual(["counting:ro:a", "counting:rw+tls:a", "counting:rw:a", "counting:rw:b"]);
    await opened[0]!.ctx.pwrite(Buffer.from("plain"), 0, 0);
    const b = Buffer.alloc(5);
    await opened[4]!.ctx.pread(b, 0, 0);
    expect(b).toEqual(Buffer.alloc(5));
    for (const o of opened) await stack.close(o);
    await stack.unload();
    expect(plugin.counts.close).toBe(4);
  });
});

const ok = requireTools([TOOLS.nbdkit]) && requirePythonLibnbd();

describe.skipIf(!ok)("openonce filter: 8 clients in front of the nbd plugin", () => {
  it("the upstream server sees one connection, however many clients come and go", async () => {
    const dir = makeTmpDir();
    const up = await startNbdkitAt(join(dir, "up.sock"), ["memory", "1M"]);
    const proxy = await startCountingProxy(join(dir, "proxy.sock"), join(dir, "up.sock"));
    const srv = await startServer(["--filter=openonce", "nbd", `socket=${proxy.path}`]);
    try {
      await py(
        `
hs = [connect() for _ in range(8)]
for i, h in enumerate(hs):
    h.pwrite(b"%d" % i, i * 512)
for i, h in enumerate(hs):
    eq(h.pread(1, ((i + 3) % 8) * 512), b"%d" % ((i + 3) % 8))
    assert h.can_multi_conn()
for h in hs:
    h.shutdown()
h = connect(); eq(h.pread(1, 512), b"1"); h.shutdown()
print("OK")`,
        srv.uri,
      );
      expect(proxy.connections).toBe(1);
    } finally {
      await srv.stop();
      await proxy.close();
      await up.stop();
    }
  });
});
