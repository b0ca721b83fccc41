// What the server offers layers: ServerServices at afterFork (shutdown,
// log, debug) and ConnectionInfo at open (id, peer, tls, disconnect).
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { startServer, type RunningServer } from "../../src/actors/server.js";
import type { ConnectionInfo, Filter, Plugin, ServerServices } from "../../src/backend/types.js";
import { Stack } from "../../src/backend/stack.js";
import { openClient } from "../../src/client/index.js";
import createMemory from "../../src/plugins/memory/index.js";
import { makeTmpDir, removeTmpDir } from "../helpers/server.js";
import { runningStack } from "../helpers/stack.js";

describe("ServerServices", () => {
  it("afterFork gets shutdown, log and debug; a shutdown asked before the server listens is held", async () => {
    let got: ServerServices | undefined;
    const lines: string[] = [];
    const debug: string[] = [];
    const plugin: Plugin = { ...createMemory(), afterFork: (s) => void (got = s) };
    const filter: Filter = { name: "f", afterFork: (_lower, s) => s.log("filter saw services") };
    const stack = new Stack(plugin, [filter], { log: (m) => debug.push(m), error: (m) => lines.push(m) });
    await stack.load();
    await stack.config("size", "1M");
    await stack.configComplete();
    await stack.getReady();
    await stack.afterFork();
    expect(lines).toEqual(["filter saw services"]);
    got!.debug("a debug line");
    expect(debug).toContain("a debug line");
    got!.shutdown("done with it");
    const asked: string[] = [];
    stack.onShutdownRequest((r) => asked.push(r));
    expect(asked).toEqual(["done with it"]);
    got!.shutdown();
    expect(asked).toHaveLength(2);
    await stack.unload();
  });
});

describe("ConnectionInfo", () => {
  let srv: RunningServer | undefined;
  let dir: string | undefined;
  afterEach(async () => {
    await srv?.shutdown();
    if (dir) removeTmpDir(dir);
    srv = dir = undefined;
  });

  it("open gets the connection's id, peer and tls; disconnect(false) closes it after its replies", async () => {
    const seen: ConnectionInfo[] = [];
    const filterSeen: (ConnectionInfo | undefined)[] = [];
    // Without the memory plugin's preadSparse and direct memory: every read must reach the pread below.
    const { preadSparse: _sparse, memory: _memory, ...mem } = createMemory();
    let reached: () => void = () => {};
    const inPlugin = new Promise<void>((r) => (reached = r));
    const plugin: Plugin = {
      ...mem,
      open: (ro, name, tls, conn) => {
        seen.push(conn!);
        return mem.open(ro, name, tls);
      },
      async pread(h, buf, off, fl) {
        reached();
        await new Promise((r) => setTimeout(r, 50));
        return mem.pread(h, buf, off, fl);
      },
    };
    const filter: Filter = { name: "f", open: (a) => void filterSeen.push(a.connection) };
    const stack = await runningStack(plugin, [filter], [["size", "1M"]]);
    dir = makeTmpDir("nbdstate-services-");
    const sock = join(dir, "s.sock");
    srv = await startServer(stack, { listeners: [{ kind: "unix", path: sock }], readonly: false, threads: 16, tls: "off" });
    const c = await openClient({ path: sock });
    expect(seen).toHaveLength(1);
    expect(seen[0]!.id).toMatch(/^conn-\d+$/);
    expect(seen[0]!.peer.family).toBe("unix");
    expect(seen[0]!.tls).toBe(false);
    expect(Date.now() - seen[0]!.acceptedAt).toBeLessThan(10_000);
    expect(filterSeen[0]).toBe(seen[0]);
    // A read in flight when disconnect(false) comes is still answered.
    const read = c.pread(4096, 0);
    await inPlugin;
    seen[0]!.disconnect(false);
    expect((await read).length).toBe(4096);
    await expect(c.pread(4096, 0)).rejects.toThrow();
  });
});
