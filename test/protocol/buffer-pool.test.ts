// The reply buffer pool takes back only the storage it made: a small
// Buffer.allocUnsafe shares one of Node's 8 KiB slabs with other buffers,
// and handing that slab out again corrupted them (caught by
// test/trust/payload-reads when pooling started at 4 KiB).
import { describe, expect, it } from "vitest";
import { replyBuffers } from "../../src/actors/buffer-pool.js";

describe("reply buffer pool", () => {
  it("reuses its own buffers, and never takes in a slab of Node's small-buffer pool", () => {
    const a = replyBuffers.get(5000);
    const storage = a.buffer;
    replyBuffers.put(a);
    expect(replyBuffers.get(6000).buffer, "a 8 KiB class buffer comes back").toBe(storage);

    // The first buffer of a fresh slab of Node's pool (byteOffset 0), and one beside it.
    let small = Buffer.allocUnsafe(100);
    for (let i = 0; i < 1000 && small.byteOffset !== 0; i++) small = Buffer.allocUnsafe(100);
    expect(small.byteOffset).toBe(0);
    expect(small.buffer.byteLength).toBe(Buffer.poolSize);
    const neighbour = Buffer.allocUnsafe(100);
    expect(neighbour.buffer).toBe(small.buffer);
    neighbour.fill(7);
    replyBuffers.put(small);
    for (let i = 0; i < 8; i++) {
      const b = replyBuffers.get(4096 + i);
      expect(b.buffer).not.toBe(small.buffer);
      b.fill(0);
    }
    expect(neighbour.every((x) => x === 7)).toBe(true);
  });
});
