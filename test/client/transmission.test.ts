// Every command, with and without structured replies, against nbdkit.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NbdClient, openClient, NbdDisconnectedError, NbdRequestError } from "../../src/client/index.js";
import * as C from "../../src/protocol/constants.js";
import { patternBuffer } from "../helpers/pattern.js";
import { requireNbdkit, startNbdkit, type Nbdkit } from "./nbdkit.js";

const skip = requireNbdkit();
const MiB = 1 << 20;

async function expectNbdError(p: Promise<unknown>, errno: number, name: string): Promise<NbdRequestError> {
  const err = await p.then(
    () => undefined,
    (e) => e,
  );
  expect(err).toBeInstanceOf(NbdRequestError);
  expect(err.errno).toBe(errno);
  expect(err.errnoName).toBe(name);
  return err;
}

describe.skipIf(skip).each([
  { sr: true, label: "structured replies" },
  { sr: false, label: "simple replies" },
])("transmission with $label (nbdkit)", ({ sr }) => {
  let mem: Nbdkit;
  let pat: Nbdkit;
  let c: NbdClient;
  beforeAll(async () => {
    [mem, pat] = await Promise.all([startNbdkit(["memory", "4M"]), startNbdkit(["pattern", "size=4M"])]);
    c = await openClient({ path: mem.sock, structuredReplies: sr, metaContexts: [C.BASE_ALLOCATION] });
  });
  afterAll(async () => {
    if (c?.phase === "transmission") await c.disconnect();
    await Promise.all([mem?.stop(), pat?.stop()]);
  });

  it("negotiated what was asked", () => {
    expect(c.structuredReplies).toBe(sr);
    expect(c.metaContexts.map((m) => m.name)).toEqual(sr ? [C.BASE_ALLOCATION] : []);
    expect(c.size).toBe(4 * MiB);
    const f = c.transmissionFlags;
    for (const flag of [C.NBD_FLAG_SEND_FLUSH, C.NBD_FLAG_SEND_FUA, C.NBD_FLAG_SEND_TRIM, C.NBD_FLAG_SEND_WRITE_ZEROES, C.NBD_FLAG_SEND_CACHE, C.NBD_FLAG_SEND_FAST_ZERO]) {
      expect(f & flag).toBe(flag);
    }
    expect(!!(f & C.NBD_FLAG_SEND_DF)).toBe(sr);
  });

  it("pread returns the pattern plugin's data (small, unaligned, large)", async () => {
    const p = await openClient({ path: pat.sock, structuredReplies: sr });
    expect(await p.pread(16, 0)).toEqual(patternBuffer(0, 16));
    expect(await p.pread(13, 1001)).toEqual(patternBuffer(1001, 13));
    // Buffer.equals: vitest's toEqual walks big buffers byte by byte (slow).
    expect((await p.pread(4 * MiB, 0)).equals(patternBuffer(0, 4 * MiB))).toBe(true);
    expect(await p.pread(100, 4 * MiB - 100, C.NBD_CMD_FLAG_DF * (sr ? 1 : 0))).toEqual(patternBuffer(4 * MiB - 100, 100));
    await p.disconnect();
  });

  it("pwrite / pread round trip, with FUA; flush", async () => {
    const data = randomBytes(65536);
    await c.pwrite(data, 12345);
    expect((await c.pread(65536, 12345)).equals(data)).toBe(true);
    const more = randomBytes(513);
    await c.pwrite(more, 3 * MiB + 1, C.NBD_CMD_FLAG_FUA);
    await c.flush();
    expect(await c.pread(513, 3 * MiB + 1)).toEqual(more);
  });

  it("trim and zero (NO_HOLE, FAST_ZERO, FUA) read back as zeroes; cache", async () => {
    const block = Buffer.alloc(8192, 0xaa);
    for (const [i, flags] of [0, C.NBD_CMD_FLAG_NO_HOLE, C.NBD_CMD_FLAG_FAST_ZERO, C.NBD_CMD_FLAG_FUA | C.NBD_CMD_FLAG_NO_HOLE].entries()) {
      const off = MiB + i * 8192;
      await c.pwrite(block, off);
      await c.zero(4096, off + 1024, flags);
      const got = await c.pread(8192, off);
      expect(got.subarray(0, 1024)).toEqual(block.subarray(0, 1024));
      expect(got.subarray(1024, 5120)).toEqual(Buffer.alloc(4096));
      expect(got.subarray(5120)).toEqual(block.subarray(5120));
    }
    await c.pwrite(block, 2 * MiB);
    await c.trim(8192, 2 * MiB, C.NBD_CMD_FLAG_FUA);
    expect(await c.pread(8192, 2 * MiB)).toEqual(Buffer.alloc(8192)); // memory plugin: trimmed reads as zero
    await c.cache(MiB, 0);
  });

  it.runIf(sr)("blockStatus reports data and holes; REQ_ONE limits it to one extent", async () => {
    const d = await openClient({ path: mem.sock, metaContexts: [C.BASE_ALLOCATION] });
    await d.trim(4 * MiB, 0);
    await d.pwrite(Buffer.alloc(32768, 1), MiB);
    const ext = await d.blockStatus(4 * MiB, 0);
    expect(ext.reduce((n, e) => n + e.length, 0)).toBe(4 * MiB);
    expect(ext[0]).toEqual({ length: MiB, flags: C.NBD_STATE_HOLE | C.NBD_STATE_ZERO });
    expect(ext[1]).toEqual({ length: 32768, flags: 0 });
    const one = await d.blockStatus(4 * MiB, 0, C.NBD_CMD_FLAG_REQ_ONE);
    expect(one).toHaveLength(1);
    const all = await d.blockStatusAll(65536, MiB);
    expect([...all.keys()]).toEqual([d.metaContexts[0].id]);
    await d.disconnect();
  });

  it.runIf(!sr)("blockStatus without a meta context fails with EINVAL", async () => {
    await expectNbdError(c.blockStatus(4096, 0), C.NBD_EINVAL, "EINVAL");
    expect(await c.pread(1, 0)).toHaveLength(1);
  });

  it("256 requests in flight at once, data checked", async () => {
    const n = 256;
    const size = 4096;
    const blocks = Array.from({ length: n }, (_, i) => Buffer.alloc(size, i));
    const writes = blocks.map((b, i) => c.pwrite(b, i * size));
    expect(c.inFlight).toBe(n);
    await Promise.all(writes);
    const order = [...Array(n).keys()].sort(() => Math.random() - 0.5);
    const reads = order.map((i) => c.pread(size, i * size).then((b) => [i, b] as const));
    expect(c.inFlight).toBe(n);
    for (const [i, b] of await Promise.all(reads)) expect(b.equals(blocks[i])).toBe(true);
    // Mixed: reads and writes of different sizes interleaved.
    const p = await openClient({ path: pat.sock, structuredReplies: sr });
    const sizes = Array.from({ length: n }, (_, i) => 1 + ((i * 7919) % 200000));
    const got = await Promise.all(sizes.map((len, i) => p.pread(len, (i * 12289) % (2 * MiB))));
    got.forEach((b, i) => expect(b.equals(patternBuffer((i * 12289) % (2 * MiB), sizes[i]))).toBe(true));
    await p.disconnect();
  });

  it("errors carry the NBD errno and leave the connection usable", async () => {
    await expectNbdError(c.pread(10, 4 * MiB - 5), C.NBD_EINVAL, "EINVAL");
    await expectNbdError(c.pwrite(Buffer.alloc(10), 4 * MiB - 5), C.NBD_ENOSPC, "ENOSPC");
    await expectNbdError(c.zero(10, 4 * MiB), C.NBD_ENOSPC, "ENOSPC");
    await expectNbdError(c.trim(10, 4 * MiB), C.NBD_EINVAL, "EINVAL");
    const e = await expectNbdError(c.pread(64 * MiB + 1, 0), C.NBD_EINVAL, "EINVAL");
    expect(e.command).toBe(C.NBD_CMD_READ);
    expect(e.code).toBe("EINVAL");
    expect(e.message).toMatch(/NBD_CMD_READ failed: EINVAL \(22\)/);
    // Errors mixed with successes in flight.
    const mixed = await Promise.allSettled([c.pread(8, 0), c.pread(8, 5 * MiB), c.pread(8, 8)]);
    expect(mixed.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    await c.pwrite(Buffer.from("still fine"), 0);
    expect((await c.pread(10, 0)).toString()).toBe("still fine");
  });

  it("raw requests: unknown command, bad flags, nextFrame", async () => {
    const r = await c.raw.request({ type: 99, length: 0 });
    expect(r.error).toBe(C.NBD_EINVAL);
    expect(r.frames).toHaveLength(1);
    const frame = c.raw.nextFrame();
    const ok = await c.raw.request({ type: C.NBD_CMD_READ, offset: 0, length: 10 });
    expect(ok.error).toBe(0);
    expect(ok.data).toEqual((await c.pread(10, 0)));
    const f = await frame;
    expect(f.kind).toBe(sr ? "structured" : "simple");
    const big = await c.raw.request({ type: C.NBD_CMD_READ, offset: 0xffffffffffffff00n, length: 1 });
    expect(big.error).toBe(C.NBD_EINVAL);
    expect((await c.pread(4, 0)).length).toBe(4);
  });
});

describe.skipIf(skip)("error cases needing their own server (nbdkit)", () => {
  it("write on a read-only export -> EPERM", async () => {
    const k = await startNbdkit(["-r", "memory", "1M"]);
    const c = await openClient({ path: k.sock });
    expect(c.transmissionFlags & C.NBD_FLAG_READ_ONLY).toBeTruthy();
    await expectNbdError(c.pwrite(Buffer.alloc(10), 0), C.NBD_EPERM, "EPERM");
    await expectNbdError(c.zero(10, 0), C.NBD_EPERM, "EPERM");
    await expectNbdError(c.trim(10, 0), C.NBD_EPERM, "EPERM");
    expect(await c.pread(4, 0)).toEqual(Buffer.alloc(4));
    await c.disconnect();
    await k.stop();
  });

  it("FAST_ZERO on a slow zero -> ENOTSUP; plugin EIO on both reply kinds", async () => {
    const k = await startNbdkit(["--filter=nozero", "memory", "1M", "zeromode=emulate", "fastzeromode=slow"]);
    const c = await openClient({ path: k.sock });
    await expectNbdError(c.zero(4096, 0, C.NBD_CMD_FLAG_FAST_ZERO), C.NBD_ENOTSUP, "ENOTSUP");
    await c.zero(4096, 0);
    await c.disconnect();
    await k.stop();
    const e = await startNbdkit(["--filter=error", "memory", "1M", "error=EIO", "error-pread-rate=1"]);
    for (const sr of [true, false]) {
      const d = await openClient({ path: e.sock, structuredReplies: sr });
      await expectNbdError(d.pread(512, 0), C.NBD_EIO, "EIO");
      await d.pwrite(Buffer.alloc(512, 1), 0);
      await expectNbdError(d.pread(512, 0), C.NBD_EIO, "EIO");
      await d.disconnect();
    }
    await e.stop();
  });

  it("connection loss rejects every pending request; later calls fail fast", async () => {
    const k = await startNbdkit(["--filter=delay", "memory", "1M", "delay-read=10"]);
    const c = await openClient({ path: k.sock });
    const reads = Array.from({ length: 20 }, (_, i) => c.pread(512, i * 512));
    const settled = Promise.allSettled(reads);
    await new Promise((r) => setTimeout(r, 100));
    expect(c.inFlight).toBe(20);
    k.proc.kill("SIGKILL");
    const results = await settled;
    for (const r of results) {
      expect(r.status).toBe("rejected");
      expect((r as PromiseRejectedResult).reason.name).toBe("NbdDisconnectedError");
      expect((r as PromiseRejectedResult).reason.message).toMatch(/(closed the connection|connection failed).*\(20 requests in flight\)/);
    }
    expect(c.phase).toBe("closed");
    expect(await c.closed).toBeInstanceOf(Error);
    await expect(c.pread(1, 0)).rejects.toBeInstanceOf(NbdDisconnectedError);
    await c.disconnect(); // no-op once closed
    await k.stop();
  });

  it("disconnect() waits for requests in flight", async () => {
    const k = await startNbdkit(["--filter=delay", "memory", "1M", "delay-write=200ms"]);
    const c = await openClient({ path: k.sock });
    const w = c.pwrite(Buffer.alloc(4096, 7), 0);
    await c.disconnect();
    await expect(w).resolves.toBeUndefined();
    expect(c.phase).toBe("closed");
    const d = await openClient({ path: k.sock });
    expect(await d.pread(4096, 0)).toEqual(Buffer.alloc(4096, 7));
    await d.disconnect();
    await k.stop();
  });
});
