// Malformed and hostile input over a raw socket (node:net, no client
// library): garbage client flags, bad magics, huge lengths, truncated frames,
// unknown options and commands. Each closes at most the offending
// connection: afterwards the server still negotiates with a well-behaved
// client (nbdinfo), and a second connection opened before the abuse keeps
// serving (write then read back through it). Framing: NetworkBlockDevice/nbd
// doc/proto.md, see test/helpers/raw.ts.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { requireTools, TOOLS } from "../helpers/tools.js";
import { runOk, sleep, startServer, SERVER_NAME, type RunningServer } from "../helpers/server.js";
import {
  CMD,
  ERRNO,
  FLAG_C_FIXED_NEWSTYLE,
  FLAG_HAS_FLAGS,
  OPT,
  REP,
  RawConn,
  encodeOption,
  encodeRequest,
  handshake,
  isErrorReply,
  newHandle,
  openTransmission,
  optGo,
  optList,
  rawRead,
  rawWrite,
  readGreeting,
  readOptionReply,
  readSimpleReply,
  u16,
  u32,
  u64,
  type ExportInfo,
} from "../helpers/raw.js";

const ok = requireTools([TOOLS.nbdinfo]);
const MiB = 1 << 20;
const SIZE = 128 * MiB; // above the 64 MiB request limit, so "too large" is not "out of range"
const CLOSE_MS = 5000;

describe.skipIf(!ok)(`bad input over a raw socket against ${SERVER_NAME}`, () => {
  let srv: RunningServer;
  let keeper: RawConn; // the long-lived connection opened before any abuse
  let keeperInfo: ExportInfo;
  let round = 0;

  beforeAll(async () => {
    srv = await startServer(["memory", `size=${SIZE}`]);
    ({ conn: keeper, info: keeperInfo } = await openTransmission(srv.sock));
  });
  afterAll(async () => {
    keeper?.destroy();
    await srv?.stop();
  });

  /** After each abuse: the server is alive, nbdinfo works, the keeper serves. */
  async function expectHealthy(): Promise<void> {
    expect(srv.exited, `server exited:\n${srv.stderr}`).toBe(false);
    const r = await runOk("nbdinfo", ["--size", srv.uri]);
    expect(r.stdout.trim()).toBe(String(SIZE));
    expect(keeper.closed, "the long-lived connection was closed").toBe(false);
    const off = 100 * MiB + (round++ % 64) * 65536;
    const data = randomBytes(4096);
    expect(await rawWrite(keeper, off, data)).toBe(0);
    const back = await rawRead(keeper, off, 4096);
    expect(Buffer.isBuffer(back) && back.equals(data)).toBe(true);
  }

  /** Open a connection that has done the handshake and NBD_OPT_GO. */
  async function transmission(): Promise<RawConn> {
    const { conn } = await openTransmission(srv.sock);
    return conn;
  }

  it("the keeper connection negotiated the export (size, HAS_FLAGS)", () => {
    expect(keeperInfo.size).toBe(BigInt(SIZE));
    expect(keeperInfo.flags & FLAG_HAS_FLAGS).toBe(FLAG_HAS_FLAGS);
  });

  it("garbage instead of client flags: the server closes the connection", async () => {
    const c = await RawConn.connect(srv.sock);
    await readGreeting(c);
    c.write(Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    expect(await c.waitClosed(CLOSE_MS)).toBe(true);
    await expectHealthy();
  });

  it("unknown client flag bits: the server closes the connection (spec: MUST)", async () => {
    const c = await RawConn.connect(srv.sock);
    await readGreeting(c);
    c.write(u32(FLAG_C_FIXED_NEWSTYLE | 0x80));
    expect(await c.waitClosed(CLOSE_MS)).toBe(true);
    await expectHealthy();
  });

  it("bad option magic: the server closes the connection", async () => {
    const c = await RawConn.connect(srv.sock);
    await handshake(c);
    c.write(Buffer.concat([u64(0x1122334455667788n), u32(OPT.LIST), u32(0)]));
    expect(await c.waitClosed(CLOSE_MS)).toBe(true);
    await expectHealthy();
  });

  it("huge option length (2^31): an error reply or a close, never a 2 GiB buffer", async () => {
    const c = await RawConn.connect(srv.sock);
    await handshake(c);
    c.write(encodeOption(OPT.LIST, Buffer.alloc(0), 2 ** 31));
    // Either the server hangs up (nbdkit: "client option data too long")
    // or it answers with an error; it must not wait for 2 GiB.
    const reply = await readOptionReply(c, CLOSE_MS).catch(() => null);
    if (reply) expect(isErrorReply(reply.type)).toBe(true);
    else expect(c.closed).toBe(true);
    c.destroy();
    await expectHealthy();
  });

  it("huge NBD_OPT_GO length (2^32-1) with a few bytes of data: closed, server fine", async () => {
    const c = await RawConn.connect(srv.sock);
    await handshake(c);
    c.write(encodeOption(OPT.GO, Buffer.from([0, 0, 0, 0, 0, 0]), 0xffffffff));
    const reply = await readOptionReply(c, CLOSE_MS).catch(() => null);
    if (reply) expect(isErrorReply(reply.type)).toBe(true);
    else expect(c.closed).toBe(true);
    c.destroy();
    await expectHealthy();
  });

  it("truncated option frame then close: no harm", async () => {
    const c = await RawConn.connect(srv.sock);
    await handshake(c);
    // NBD_OPT_GO announcing 100 bytes, 3 sent, then EOF.
    c.write(encodeOption(OPT.GO, Buffer.from([0, 0, 0]), 100));
    c.end();
    expect(await c.waitClosed(CLOSE_MS)).toBe(true);
    // And a header cut in half.
    const d = await RawConn.connect(srv.sock);
    await handshake(d);
    d.write(encodeOption(OPT.LIST).subarray(0, 7));
    d.end();
    expect(await d.waitClosed(CLOSE_MS)).toBe(true);
    await expectHealthy();
  });

  it("EOF at every point of the handshake: greeting, client flags, option", async () => {
    for (let step = 0; step < 4; step++) {
      const c = await RawConn.connect(srv.sock);
      if (step >= 1) await readGreeting(c);
      if (step >= 2) c.write(u32(FLAG_C_FIXED_NEWSTYLE).subarray(0, 2));
      if (step >= 3) c.write(u32(FLAG_C_FIXED_NEWSTYLE).subarray(2));
      c.destroy();
    }
    await sleep(100);
    await expectHealthy();
  });

  it("unknown option: NBD_REP_ERR_UNSUP echoing the option, and negotiation continues", async () => {
    const c = await RawConn.connect(srv.sock);
    await handshake(c);
    c.write(encodeOption(0x1234, Buffer.from("hello")));
    const r = await readOptionReply(c);
    expect(r.option).toBe(0x1234);
    expect(r.type).toBe(REP.ERR_UNSUP);
    // Negotiation continues: list, then go, then a read.
    expect(await optList(c)).toEqual([""]);
    const info = await optGo(c);
    expect(info.size).toBe(BigInt(SIZE));
    const data = await rawRead(c, 0, 512);
    expect(Buffer.isBuffer(data)).toBe(true);
    c.destroy();
    await expectHealthy();
  });

  it("options with bad payloads get NBD_REP_ERR_INVALID and negotiation continues", async () => {
    const c = await RawConn.connect(srv.sock);
    await handshake(c);
    // NBD_OPT_LIST must carry no data.
    c.write(encodeOption(OPT.LIST, Buffer.from("xx")));
    const r1 = await readOptionReply(c);
    expect(r1.option).toBe(OPT.LIST);
    expect(r1.type).toBe(REP.ERR_INVALID);
    // NBD_OPT_GO whose name length overruns the option.
    c.write(encodeOption(OPT.GO, Buffer.concat([u32(100), Buffer.from("ab"), u16(0)])));
    const r2 = await readOptionReply(c);
    expect(r2.option).toBe(OPT.GO);
    expect(r2.type).toBe(REP.ERR_INVALID);
    expect(await optList(c)).toEqual([""]);
    await optGo(c);
    c.destroy();
    await expectHealthy();
  });

  it("a stream of unknown options: each answered with ERR_UNSUP until the server may hang up", async () => {
    const c = await RawConn.connect(srv.sock);
    await handshake(c);
    let answered = 0;
    for (let i = 0; i < 100 && !c.closed; i++) {
      c.write(encodeOption(0x999 + i));
      const r = await readOptionReply(c, CLOSE_MS).catch(() => null);
      if (!r) break;
      expect(r.type).toBe(REP.ERR_UNSUP);
      answered++;
    }
    // nbdkit hangs up after 32 options without an export; answering all 100 is fine too.
    expect(answered).toBeGreaterThanOrEqual(16);
    c.destroy();
    await expectHealthy();
  });

  it("NBD_OPT_ABORT: acknowledged (or not) and closed", async () => {
    const c = await RawConn.connect(srv.sock);
    await handshake(c);
    c.write(encodeOption(OPT.ABORT));
    const r = await readOptionReply(c, CLOSE_MS).catch(() => null);
    if (r) expect(r.type).toBe(REP.ACK);
    expect(await c.waitClosed(CLOSE_MS)).toBe(true);
    await expectHealthy();
  });

  it("NBD_OPT_EXPORT_NAME (old way into transmission) works alongside", async () => {
    const c = await RawConn.connect(srv.sock);
    const { clientFlags } = await handshake(c);
    c.write(encodeOption(OPT.EXPORT_NAME, Buffer.alloc(0)));
    const b = await c.read(10 + (clientFlags & 2 ? 0 : 124));
    expect(b.readBigUInt64BE(0)).toBe(BigInt(SIZE));
    expect(b.readUInt16BE(8) & FLAG_HAS_FLAGS).toBe(FLAG_HAS_FLAGS);
    expect(Buffer.isBuffer(await rawRead(c, 0, 16))).toBe(true);
    c.destroy();
    await expectHealthy();
  });

  it("bad request magic in transmission: the server closes the connection", async () => {
    const c = await transmission();
    c.write(encodeRequest({ magic: 0xdeadbeef, type: CMD.READ, handle: newHandle(), offset: 0, length: 512 }));
    expect(await c.waitClosed(CLOSE_MS)).toBe(true);
    const d = await transmission();
    d.write(Buffer.alloc(100, 0x41)); // plain garbage
    expect(await d.waitClosed(CLOSE_MS)).toBe(true);
    await expectHealthy();
  });

  it("READ of 2^31 bytes: an error reply without payload (and still usable) or a disconnect, never a crash", async () => {
    const c = await transmission();
    const handle = newHandle();
    c.write(encodeRequest({ type: CMD.READ, handle, offset: 0, length: 2 ** 31 }));
    const r = await readSimpleReply(c, CLOSE_MS).catch(() => null);
    if (r) {
      expect(r.handle).toBe(handle);
      expect(r.error).not.toBe(0);
      // nbdkit: EINVAL here (past the end of a 128 MiB export)
      expect([ERRNO.EINVAL, ERRNO.ENOMEM, ERRNO.EOVERFLOW]).toContain(r.error);
      expect(Buffer.isBuffer(await rawRead(c, 0, 4096))).toBe(true);
    } else {
      expect(c.closed).toBe(true);
    }
    c.destroy();
    await expectHealthy();
  });

  it("READ of 64 MiB + 1 inside the export (over the request size limit): error reply, connection usable", async () => {
    const c = await transmission();
    const handle = newHandle();
    c.write(encodeRequest({ type: CMD.READ, handle, offset: 0, length: 64 * MiB + 1 }));
    const r = await readSimpleReply(c, CLOSE_MS).catch(() => null);
    if (r) {
      expect(r.handle).toBe(handle);
      // nbdkit: ENOMEM ("data request is too large"); EINVAL or EOVERFLOW are what the spec suggests
      expect([ERRNO.EINVAL, ERRNO.ENOMEM, ERRNO.EOVERFLOW]).toContain(r.error);
      expect(Buffer.isBuffer(await rawRead(c, 0, 4096))).toBe(true);
    } else {
      expect(c.closed).toBe(true);
    }
    c.destroy();
    await expectHealthy();
  });

  it("WRITE announcing 2^31 bytes with a short payload: error or disconnect, never a crash", async () => {
    const c = await transmission();
    c.write(encodeRequest({ type: CMD.WRITE, handle: newHandle(), offset: 0, length: 2 ** 31, data: Buffer.alloc(4096, 1) }));
    const r = await readSimpleReply(c, CLOSE_MS).catch(() => null);
    if (r) expect(r.error).not.toBe(0);
    c.destroy();
    await expectHealthy();
  });

  it("truncated WRITE payload then close: no harm, acknowledged data intact", async () => {
    const c = await transmission();
    const marker = Buffer.alloc(4096, 0x5c);
    expect(await rawWrite(c, 50 * MiB, marker)).toBe(0);
    c.write(encodeRequest({ type: CMD.WRITE, handle: newHandle(), offset: 60 * MiB, length: 65536, data: Buffer.alloc(1000, 1) }));
    c.end();
    expect(await c.waitClosed(CLOSE_MS)).toBe(true);
    await expectHealthy();
    const back = await rawRead(keeper, 50 * MiB, 4096);
    expect(Buffer.isBuffer(back) && back.equals(marker)).toBe(true);
  });

  it("unknown command type: EINVAL reply, connection usable", async () => {
    const c = await transmission();
    const handle = newHandle();
    c.write(encodeRequest({ type: 99, handle, offset: 0, length: 0 }));
    const r = await readSimpleReply(c);
    expect(r.handle).toBe(handle);
    expect(r.error).toBe(ERRNO.EINVAL);
    expect(await rawWrite(c, 4096, Buffer.from("still here"))).toBe(0);
    const back = await rawRead(c, 4096, 10);
    expect(Buffer.isBuffer(back) && back.toString()).toBe("still here");
    c.destroy();
    await expectHealthy();
  });

  it("unknown command flags on a WRITE: EINVAL reply, connection usable", async () => {
    const c = await transmission();
    const handle = newHandle();
    c.write(encodeRequest({ type: CMD.WRITE, flags: 0x8000, handle, offset: 0, length: 4, data: Buffer.from("abcd") }));
    const r = await readSimpleReply(c);
    expect(r.handle).toBe(handle);
    expect(r.error).toBe(ERRNO.EINVAL);
    expect(Buffer.isBuffer(await rawRead(c, 0, 4))).toBe(true);
    c.destroy();
    await expectHealthy();
  });

  it("BLOCK_STATUS without structured replies negotiated: EINVAL, connection usable", async () => {
    const c = await transmission();
    const handle = newHandle();
    c.write(encodeRequest({ type: CMD.BLOCK_STATUS, handle, offset: 0, length: 4096 }));
    const r = await readSimpleReply(c);
    expect(r.handle).toBe(handle);
    expect(r.error).toBe(ERRNO.EINVAL);
    expect(Buffer.isBuffer(await rawRead(c, 0, 4))).toBe(true);
    c.destroy();
    await expectHealthy();
  });

  it("NBD_CMD_DISC: the server closes the connection", async () => {
    const c = await transmission();
    c.write(encodeRequest({ type: CMD.DISC, handle: newHandle(), offset: 0, length: 0 }));
    expect(await c.waitClosed(CLOSE_MS)).toBe(true);
    await expectHealthy();
  });

  it("50 connections abandoned mid-handshake at once", async () => {
    const conns = await Promise.all(Array.from({ length: 50 }, () => RawConn.connect(srv.sock)));
    await Promise.all(conns.map((c, i) => (i % 2 ? readGreeting(c).catch(() => undefined) : undefined)));
    conns.forEach((c) => c.destroy());
    await sleep(100);
    await expectHealthy();
  });
});
