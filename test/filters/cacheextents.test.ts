// The cacheextents filter: the last block status answer of the layer below
// is remembered (per export) and later requests starting inside it are
// answered from memory; writes forget it, and an answer fetched while a
// write ran is not remembered. In-process with a plugin that counts its
// extents calls, then differential against nbdkit's cacheextents filter.
import { describe, expect, it } from "vitest";
import { FLAG_REQ_ONE, type Extent, type Plugin } from "../../src/backend/types.js";
import createCacheExtents from "../../src/filters/cacheextents/index.js";
import { runningStack } from "../helpers/stack.js";
import { expectSameInfo, expectSameReplies, startPair, stateTools } from "./state-helpers.js";

/** 1 MiB: 64K blocks alternating data / hole per export; counts extents calls; optional delay. */
function extentsPlugin() {
  const calls: { name: string; count: number; offset: number; flags: number }[] = [];
  const written = new Map<string, Set<number>>();
  let delay = 0;
  const plugin: Plugin<{ name: string }> = {
    name: "ext",
    open: (_ro, name) => ({ name }),
    getSize: () => 1 << 20,
    canWrite: () => true,
    pread: (_h, b) => void b.fill(0),
    pwrite(h, b, o) {
      const w = written.get(h.name) ?? new Set();
      written.set(h.name, w);
      for (let blk = Math.floor(o / 65536); blk <= Math.floor((o + b.length - 1) / 65536); blk++) w.add(blk);
    },
    async extents(h, count, offset, flags): Promise<Extent[]> {
      calls.push({ name: h.name, count, offset, flags });
      // The answer is what was true when asked, even if it arrives late.
      const out: Extent[] = [];
      const w = written.get(h.name) ?? new Set();
      for (let pos = offset; pos < offset + count; ) {
        const blk = Math.floor(pos / 65536);
        const end = Math.min((blk + 1) * 65536, offset + count);
        out.push({ length: end - pos, type: blk % 2 === 0 || w.has(blk) ? 0 : 3 });
        pos = end;
      }
      if (delay) await new Promise((r) => setTimeout(r, delay));
      return out;
    },
  };
  return { plugin, calls, setDelay: (d: number) => (delay = d) };
}

describe("cacheextents filter (in-process Stack)", () => {
  it("a request starting inside the remembered answer is served from it; REQ_ONE is dropped when asking below", async () => {
    const p = extentsPlugin();
    const stack = await runningStack(p.plugin, [createCacheExtents()]);
    const o = await stack.open(false, "", false);
    const first = await o.ctx.extents(1 << 20, 0, FLAG_REQ_ONE);
    expect(p.calls).toEqual([{ name: "", count: 1 << 20, offset: 0, flags: 0 }]);
    expect(first.length).toBe(16);
    const again = await o.ctx.extents(100_000, 70_000, FLAG_REQ_ONE);
    expect(p.calls.length).toBe(1);
    expect(again).toEqual([{ length: 131072 - 70_000, type: 3 }, { length: 100_000 - (131072 - 70_000), type: 0 }]);
    await stack.close(o);
    await stack.unload();
  });

  it("writes forget the answer; one fetched while a write ran is not remembered; exports have their own", async () => {
    const p = extentsPlugin();
    const stack = await runningStack(p.plugin, [createCacheExtents()]);
    const a = await stack.open(false, "a", false);
    const a2 = await stack.open(false, "a", false);
    const b = await stack.open(false, "b", false);
    await a.ctx.extents(1 << 20, 0, 0);
    await b.ctx.extents(1 << 20, 0, 0);
    expect(p.calls.length).toBe(2);
    await a2.ctx.extents(4096, 65536, 0); // the other connection shares export a's answer
    expect(p.calls.length).toBe(2);
    await a2.ctx.pwrite(Buffer.alloc(10), 65536 + 5, 0);
    expect((await a.ctx.extents(4096, 65536, 0))[0]!.type).toBe(0);
    expect(p.calls.length).toBe(3);
    expect((await b.ctx.extents(4096, 65536, 0))[0]!.type).toBe(3); // b's answer untouched
    expect(p.calls.length).toBe(3);
    // A slow answer, and a write that finishes while it is on its way.
    p.setDelay(50);
    await a.ctx.pwrite(Buffer.alloc(1), 0, 0); // forget
    const slow = a.ctx.extents(1 << 20, 0, 0);
    await new Promise((r) => setTimeout(r, 10));
    await a2.ctx.pwrite(Buffer.alloc(10), 3 * 65536, 0);
    await slow;
    p.setDelay(0);
    const n = p.calls.length;
    expect((await a.ctx.extents(4096, 3 * 65536, 0))[0]!.type).toBe(0);
    expect(p.calls.length).toBe(n + 1); // not served from the stale answer
    for (const o of [a, a2, b]) await stack.close(o);
    await stack.unload();
  });
});

describe.skipIf(!stateTools())("cacheextents filter: the same command line as nbdkit", () => {
  it("over memory: flags, and 300 random requests (writes between block status) give the same replies and bytes", async () => {
    const pair = await startPair(["--filter=cacheextents", "memory", "4M"]);
    try {
      await expectSameInfo(pair);
      await expectSameReplies(pair, 51, 300, ["--ops=status,status,status,write,trim,zero,read", "--conns=2"]);
    } finally {
      await pair.stop();
    }
  });
});
