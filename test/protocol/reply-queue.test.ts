// The reply queue's arenas: replies written in place, in order, whatever
// their sizes (up to 64 KiB each), as the arena grows from its small first
// size to the full one; buffers pushed whole keep their place between them.
import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { ReplyQueue } from "../../src/actors/reply-queue.js";

function sink() {
  const got: Buffer[] = [];
  const w = new Writable({
    write(chunk: Buffer, _enc, cb) {
      got.push(Buffer.from(chunk));
      cb();
    },
  });
  return { w, bytes: () => Buffer.concat(got) };
}

describe("ReplyQueue", () => {
  it("keeps every reply's bytes in order across arena growth, large first replies and pushed buffers", async () => {
    const s = sink();
    const q = new ReplyQueue(s.w as never);
    const want: Buffer[] = [];
    let seed = 7;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) % n);
    // The first reply is larger than the first arena; then a mix.
    const sizes = [40_000, 65_536, ...Array.from({ length: 400 }, () => (rnd(10) === 0 ? 65_536 : 1 + rnd(3000)))];
    for (const [i, n] of sizes.entries()) {
      if (rnd(7) === 0) {
        const b = Buffer.alloc(100_000, i & 0xff);
        q.push(b);
        want.push(b);
      }
      const { buf, pos } = q.reserve(n);
      const fill = Buffer.alloc(n, (i * 13) & 0xff);
      fill.copy(buf, pos);
      want.push(fill);
      if (rnd(5) === 0) q.flush();
    }
    q.flush();
    await new Promise((r) => setImmediate(r));
    expect(s.bytes().equals(Buffer.concat(want))).toBe(true);
  });
});
