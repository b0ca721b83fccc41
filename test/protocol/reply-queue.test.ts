// The reply queue's arenas: replies written in place, in order, whatever
// their sizes (up to 64 KiB each), as the arena grows from its small first
// size to the full one; buffers pushed whole keep their place between them.
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { ReplyQueue } from "../../src/actors/reply-queue.js";
import { fdOf } from "../../src/actors/socket-reader.js";

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

  it("writes to the fd directly while the stream has nothing pending, the rest through the stream, all in order, every buffer given back", async () => {
    const dir = mkdtempSync(join(tmpdir(), "rq-"));
    const path = join(dir, "s");
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(path, r));
    const accepted = new Promise<net.Socket>((r) => server.once("connection", r));
    const client = net.connect(path);
    client.pause();
    const sock = await accepted;
    try {
      const fd = fdOf(sock);
      expect(fd).toBeGreaterThanOrEqual(0);
      const q = new ReplyQueue(sock, fd);
      const want: Buffer[] = [];
      let returned = 0;
      let pushed = 0;
      // Far more than the socket buffers hold: the client reads a while
      // later, then as the writes go on, so some flushes find the kernel
      // full (the stream takes the rest) and some find room while the
      // stream still has bytes pending, which must not be overtaken.
      const got: Buffer[] = [];
      let n = 0;
      let total = Infinity;
      const done = new Promise<void>((r) =>
        client.on("data", (d: Buffer) => {
          got.push(d);
          if ((n += d.length) >= total) r();
        }),
      );
      let sawPending = false;
      for (let i = 0; i < 400; i++) {
        const { buf, pos } = q.reserve(16);
        buf.fill(i & 0xff, pos, pos + 16);
        want.push(Buffer.alloc(16, i & 0xff));
        const big = Buffer.alloc(16 * 1024 + i * 97, (i * 7) & 0xff);
        pushed++;
        q.push(big, () => returned++);
        want.push(big);
        if (i % 3 === 0) q.flush();
        if (sock.writableLength > 0) sawPending = true;
        if (i === 40) client.resume();
        if (i % 5 === 0) await new Promise((r) => setImmediate(r));
      }
      q.flush();
      expect(sawPending).toBe(true);
      const all = Buffer.concat(want);
      total = all.length;
      if (n < total) await done;
      await new Promise((r) => setImmediate(r));
      expect(Buffer.concat(got).equals(all)).toBe(true);
      expect(returned).toBe(pushed);
    } finally {
      client.destroy();
      sock.destroy();
      server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
