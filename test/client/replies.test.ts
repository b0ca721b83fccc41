// Reply parsing against a scripted server: orders, splits and chunk kinds
// that real servers rarely produce.
import { afterEach, describe, expect, it } from "vitest";
import { NbdClient, openClient, NbdDisconnectedError, NbdProtocolError, NbdRequestError } from "../../src/client/index.js";
import * as C from "../../src/protocol/constants.js";
import * as W from "../../src/protocol/wire.js";
import { startFakeServer, type FakeConn, type FakeServer } from "./fake-server.js";

const DONE = C.NBD_REPLY_FLAG_DONE;
const u64 = (n: number) => {
  const b = Buffer.alloc(8);
  W.writeU64(b, n, 0);
  return b;
};
const data = (offset: number, bytes: Buffer) => Buffer.concat([u64(offset), bytes]);

let servers: FakeServer[] = [];
afterEach(async () => {
  await Promise.all(servers.map((s) => s.close()));
  servers = [];
});

async function setup(opts: Parameters<typeof startFakeServer>[0] = {}, sr = true): Promise<[NbdClient, FakeConn]> {
  const server = await startFakeServer(opts);
  servers.push(server);
  const next = server.nextConnection();
  const c = await openClient({ path: server.path, structuredReplies: sr, metaContexts: sr ? [C.BASE_ALLOCATION] : [] });
  return [c, await next];
}

describe.each([{ split: undefined }, { split: 1 }, { split: 7 }])("client reply parsing (split=$split)", ({ split }) => {
  it("simple replies out of order, with and without data", async () => {
    const [c, s] = await setup({ split }, false);
    const a = c.pread(5, 0);
    const b = c.pwrite(Buffer.from("xyz"), 10);
    const f = c.flush();
    const r = await s.waitRequests(3);
    s.simple(0, r[2].cookie);
    s.simple(0, r[1].cookie);
    s.simple(0, r[0].cookie, Buffer.from("hello"));
    await expect(f).resolves.toBeUndefined();
    await expect(b).resolves.toBeUndefined();
    expect((await a).toString()).toBe("hello");
    const e = c.pread(5, 0);
    const [, , , q] = await s.waitRequests(4);
    s.simple(C.NBD_EOVERFLOW, q.cookie);
    await expect(e).rejects.toMatchObject({ errno: 75, errnoName: "EOVERFLOW" });
    c.destroy();
  });

  it("structured read: data and hole chunks out of order, interleaved with another request", async () => {
    const [c, s] = await setup({ split });
    const a = c.pread(30, 100);
    const b = c.pread(4, 0);
    const [ra, rb] = await s.waitRequests(2);
    s.chunk(0, C.NBD_REPLY_TYPE_OFFSET_DATA, ra.cookie, data(120, Buffer.alloc(10, 3)));
    s.chunk(0, C.NBD_REPLY_TYPE_OFFSET_DATA, rb.cookie, data(0, Buffer.from("abcd")));
    s.chunk(0, C.NBD_REPLY_TYPE_OFFSET_HOLE, ra.cookie, W.encodeOffsetHole(110, 10));
    s.chunk(DONE, C.NBD_REPLY_TYPE_NONE, rb.cookie);
    s.chunk(DONE, C.NBD_REPLY_TYPE_OFFSET_DATA, ra.cookie, data(100, Buffer.alloc(10, 1)));
    expect((await b).toString()).toBe("abcd");
    expect(await a).toEqual(Buffer.concat([Buffer.alloc(10, 1), Buffer.alloc(10), Buffer.alloc(10, 3)]));
    c.destroy();
  });

  it("error chunks (ERROR_OFFSET, unknown error type) and incomplete reads", async () => {
    const [c, s] = await setup({ split });
    const a = c.pread(100, 0);
    const b = c.pread(100, 0);
    const d = c.pread(100, 0);
    const w = c.pwrite(Buffer.alloc(1), 0);
    const [ra, rb, rd, rw] = await s.waitRequests(4);
    s.chunk(0, C.NBD_REPLY_TYPE_OFFSET_DATA, ra.cookie, data(0, Buffer.alloc(50)));
    s.chunk(0, C.NBD_REPLY_TYPE_ERROR_OFFSET, ra.cookie, W.encodeErrorPayload(C.NBD_EIO, "bad sector", 50));
    s.chunk(DONE, C.NBD_REPLY_TYPE_NONE, ra.cookie);
    s.chunk(DONE, C.NBD_REPLY_TYPE_OFFSET_DATA, rb.cookie, data(0, Buffer.alloc(60)));
    s.chunk(DONE, 0x8000 | 77, rd.cookie, W.encodeErrorPayload(C.NBD_ESHUTDOWN, ""));
    s.chunk(DONE, C.NBD_REPLY_TYPE_ERROR, rw.cookie, W.encodeErrorPayload(C.NBD_ENOSPC, "disk full"));
    const ea: NbdRequestError = await a.catch((e) => e);
    expect(ea).toMatchObject({ errno: 5, errnoName: "EIO", offset: 50, serverMessage: "bad sector" });
    expect(ea.message).toBe("NBD_CMD_READ failed: EIO (5): bad sector at offset 50");
    await expect(b).rejects.toThrow(/60 of 100 bytes/);
    await expect(d).rejects.toMatchObject({ errno: 108, errnoName: "ESHUTDOWN" });
    await expect(w).rejects.toMatchObject({ errno: 28, serverMessage: "disk full" });
    expect(c.phase).toBe("transmission");
    c.destroy();
  });

  it("block status for several contexts", async () => {
    const [c, s] = await setup({ split, contexts: ["x-other:thing", C.BASE_ALLOCATION] });
    expect(c.metaContexts).toEqual([{ id: 1, name: "x-other:thing" }, { id: 2, name: C.BASE_ALLOCATION }]);
    const p = c.blockStatus(8192, 0);
    const [r] = await s.waitRequests(1);
    s.chunk(0, C.NBD_REPLY_TYPE_BLOCK_STATUS, r.cookie, W.encodeBlockStatusPayload(1, [{ length: 8192, flags: 7 }]));
    s.chunk(DONE, C.NBD_REPLY_TYPE_BLOCK_STATUS, r.cookie, W.encodeBlockStatusPayload(2, [{ length: 4096, flags: 0 }, { length: 4096, flags: 3 }]));
    expect(await p).toEqual([{ length: 4096, flags: 0 }, { length: 4096, flags: 3 }]);
    c.destroy();
  });
});

describe("client protocol violations", () => {
  it("a reply with an unknown cookie fails every request and closes", async () => {
    const [c, s] = await setup();
    const reqs = [c.pread(1, 0), c.flush()];
    await s.waitRequests(2);
    s.simple(0, 0xdeadn);
    for (const p of reqs) await expect(p).rejects.toBeInstanceOf(NbdProtocolError);
    expect(c.phase).toBe("closed");
    await expect(c.pread(1, 0)).rejects.toThrow(/unknown cookie/);
  });

  it("bad reply magic and oversized chunks are fatal", async () => {
    const [c, s] = await setup();
    const p = c.pread(1, 0);
    await s.waitRequests(1);
    s.sock.write(Buffer.alloc(32, 0x55));
    await expect(p).rejects.toThrow(/bad reply magic 0x55555555/);
    const [d, t] = await setup();
    const q = d.pread(1, 0);
    const [r] = await t.waitRequests(1);
    t.sock.write(W.encodeStructuredReplyHeader(0, 1, r.cookie, 0x7fffffff));
    await expect(q).rejects.toThrow(/too large/);
  });

  it("server hang-up mid-reply rejects pending requests", async () => {
    const [c, s] = await setup();
    const p = c.pread(100, 0);
    const [r] = await s.waitRequests(1);
    s.sock.end(Buffer.concat([W.encodeStructuredReplyHeader(DONE, 1, r.cookie, 108), u64(0)]));
    await expect(p).rejects.toBeInstanceOf(NbdDisconnectedError);
    await expect(p).rejects.toThrow(/1 request in flight/);
  });

  it("raw.read detaches the parser and reads bytes as sent", async () => {
    const [c, s] = await setup();
    c.raw.send({ type: C.NBD_CMD_FLUSH, cookie: 77n });
    const [r] = await s.waitRequests(1);
    expect(r).toMatchObject({ type: C.NBD_CMD_FLUSH, cookie: 77n });
    s.simple(0, 77n);
    const got = await c.raw.read(16);
    expect(W.decodeSimpleReplyHeader(got)).toEqual({ error: 0, cookie: 77n });
    c.destroy();
  });
});
