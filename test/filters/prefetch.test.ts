// The prefetching filters, readahead and scan: both ask the layer below to
// cache (NBD_CMD_CACHE) in the background, readahead what follows each
// read, scan the whole disk while a client is connected. In-process with a
// plugin that records its cache calls, then with real clients and the
// cache filter below, differential against nbdkit.
import { describe, expect, it } from "vitest";
import type { CacheMode, Plugin } from "../../src/backend/types.js";
import createReadahead from "../../src/filters/readahead/index.js";
import createScan from "../../src/filters/scan/index.js";
import { patternBuffer } from "../helpers/pattern.js";
import { runCli, sleep, waitFor } from "../helpers/server.js";
import { runningStack } from "../helpers/stack.js";
import { expectSameInfo, expectSameReplies, startPair, stateTools } from "./state-helpers.js";

const SIZE = 1 << 20;

function cachingPlugin(canCache: CacheMode = "native") {
  const calls: [number, number][] = [];
  const events: string[] = [];
  let delay = 0;
  const data = patternBuffer(0, SIZE);
  const plugin: Plugin = {
    name: "rec",
    open: () => ({}),
    close: () => void events.push("close"),
    getSize: () => SIZE,
    canCache: () => canCache,
    pread: (_h, b, o) => void data.copy(b, 0, o, o + b.length),
    async cache(_h, count, offset) {
      calls.push([offset, count]);
      if (delay) await sleep(delay);
      events.push(`cached ${offset}`);
    },
  };
  return { plugin, calls, events, setDelay: (d: number) => (delay = d) };
}

describe("readahead filter (in-process Stack)", () => {
  it("each read prefetches what follows it, never past the end; reads return the plugin's bytes", async () => {
    const p = cachingPlugin();
    const stack = await runningStack(p.plugin, [createReadahead()]);
    const o = await stack.open(false, "", false);
    const b = Buffer.alloc(65536);
    for (let off = 0; off < SIZE; off += 65536) {
      await o.ctx.pread(b, off, 0);
      expect(b.equals(patternBuffer(off, 65536))).toBe(true);
    }
    await waitFor(() => p.calls.length >= 15, 2000);
    expect(p.calls[0]).toEqual([65536, 32768]);
    expect(p.calls.every(([off, n]) => off + n <= SIZE && n > 0)).toBe(true);
    expect(p.calls.length).toBe(15); // the last read ends at the end: nothing to prefetch
    await stack.close(o);
    await stack.unload();
  });

  it("the window doubles while reads jump past the last prefetch, and falls back when they go back", async () => {
    const p = cachingPlugin();
    const stack = await runningStack(p.plugin, [createReadahead()]);
    const o = await stack.open(false, "", false);
    const b = Buffer.alloc(4096);
    for (const off of [0, 100_000, 200_000, 400_000, 10_000]) await o.ctx.pread(b, off, 0);
    await waitFor(() => p.calls.length >= 5, 2000);
    expect(p.calls.map(([, n]) => n)).toEqual([32768, 32768, 65536, 131072, 262144]);
    await stack.close(o);
    await stack.unload();
  });

  it("close waits for the prefetch in flight: nothing runs on a closed context", async () => {
    const p = cachingPlugin();
    p.setDelay(50);
    const stack = await runningStack(p.plugin, [createReadahead()]);
    const o = await stack.open(false, "", false);
    await o.ctx.pread(Buffer.alloc(4096), 0, 0);
    await stack.close(o);
    expect(p.events).toEqual(["cached 4096", "close"]);
    await stack.unload();
  });

  it("warns once, and does nothing, when the layer below cannot cache", async () => {
    const r = await runCli([
      "-U", "-", "--filter=readahead", "--filter=ddrescue", "memory", "1M", "ddrescue-mapfile=/dev/null",
      "--run", "nbdinfo --size $uri; nbdinfo --size $uri",
    ]);
    expect(r.code).toBe(0);
    expect(r.stderr.match(/readahead: warning: the layer below does not support NBD_CMD_CACHE/g)?.length).toBe(1);
  });
});

describe("scan filter (in-process Stack)", () => {
  it("prefetches the whole disk in scan-size pieces while the client is connected", async () => {
    const p = cachingPlugin();
    const stack = await runningStack(p.plugin, [createScan()], [["scan-size", "64K"]]);
    const o = await stack.open(false, "", false);
    expect(await waitFor(() => p.calls.length === 16, 5000)).toBe(true);
    expect(p.calls).toEqual(Array.from({ length: 16 }, (_, k) => [k * 65536, 65536]));
    await sleep(20);
    expect(p.calls.length).toBe(16); // once, not forever
    await stack.close(o);
    await stack.unload();
  });

  it("scan-ahead skips to where the client reads; finalize stops a scan-forever", async () => {
    const p = cachingPlugin();
    p.setDelay(5);
    const stack = await runningStack(p.plugin, [createScan()], [["scan-size", "4K"], ["scan-forever", "true"]]);
    const o = await stack.open(false, "", false);
    await waitFor(() => p.calls.length >= 2, 2000);
    await o.ctx.pread(Buffer.alloc(4096), 900_000, 0);
    await waitFor(() => p.calls.some(([off]) => off >= 900_000), 2000);
    const jumped = p.calls.findIndex(([off]) => off >= 900_000);
    expect(p.calls[jumped]![0]).toBe(904_096);
    expect(p.calls[jumped - 1]![0]).toBeLessThan(100_000);
    await waitFor(() => p.calls.some(([off], i) => i > jumped && off === 0), 5000); // forever: from the start again
    await stack.close(o);
    const n = p.calls.length;
    await sleep(30);
    expect(p.calls.length).toBe(n);
    await stack.unload();
  });

  it("does not scan for a non-default export, nor when the layer below cannot cache; scan-size is checked", async () => {
    const p = cachingPlugin();
    p.plugin.defaultExport = () => "main";
    const stack = await runningStack(p.plugin, [createScan()]);
    const o = await stack.open(false, "other", false);
    const q = cachingPlugin("none");
    const stack2 = await runningStack(q.plugin, [createScan()]);
    const o2 = await stack2.open(false, "", false);
    await sleep(30);
    expect(p.calls).toEqual([]);
    expect(q.calls).toEqual([]);
    await stack.close(o);
    await stack2.close(o2);
    await stack.unload();
    await stack2.unload();
    for (const bad of ["1000", "256", "64M", "x"]) {
      const r = await runCli(["--filter=scan", "memory", "1M", `scan-size=${bad}`, "--run", "true"]);
      expect(r.code, bad).not.toBe(0);
      expect(r.stderr).toMatch(/scan: scan-size/);
    }
  });
});

describe.skipIf(!stateTools())("readahead and scan over the cache filter: the same command line as nbdkit", () => {
  for (const f of ["readahead", "scan"]) {
    it(`--filter=${f} --filter=cache: flags, and 200 random requests give the same replies and bytes`, async () => {
      const pair = await startPair([`--filter=${f}`, "--filter=cache", "memory", "4M", "cache=writethrough"]);
      try {
        await expectSameInfo(pair);
        await expectSameReplies(pair, 61, 200, ["--ops=read,read,read,write,zero,flush,cache,oob"]);
      } finally {
        await pair.stop();
      }
    });
  }
});
