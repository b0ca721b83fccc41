import { describe, expect, it } from "vitest";
import * as C from "../../src/protocol/constants.js";
import * as W from "../../src/protocol/wire.js";

describe("wire: handshake and options", () => {
  it("greeting round trip, oldstyle and bad magic", () => {
    const g = W.encodeGreeting(C.NBD_FLAG_FIXED_NEWSTYLE | C.NBD_FLAG_NO_ZEROES);
    expect(g.length).toBe(18);
    expect(g.subarray(0, 16).toString("latin1")).toBe("NBDMAGICIHAVEOPT");
    expect(W.decodeGreeting(g)).toEqual({ style: "newstyle", flags: 3 });
    const old = Buffer.alloc(16);
    old.writeBigUInt64BE(C.NBDMAGIC, 0);
    old.writeBigUInt64BE(C.CLISERV_MAGIC, 8);
    expect(W.decodeGreeting(old)).toEqual({ style: "oldstyle" });
    expect(() => W.decodeGreeting(Buffer.from("HTTP/1.1 200 OK\r\n\r\n"))).toThrow(W.WireError);
    expect(() => W.decodeGreeting(g.subarray(0, 17))).toThrow(/need 18/);
  });

  it("option and option reply frames", () => {
    const o = W.encodeOption(C.NBD_OPT_GO, Buffer.from("abc"));
    expect(o.length).toBe(19);
    expect(W.decodeOptionHeader(o)).toEqual({ option: C.NBD_OPT_GO, length: 3 });
    expect(o.subarray(16).toString()).toBe("abc");
    const r = W.encodeOptionReply(C.NBD_OPT_LIST, C.NBD_REP_ERR_UNKNOWN, Buffer.from("no"));
    expect(W.decodeOptionReplyHeader(r)).toEqual({ option: C.NBD_OPT_LIST, type: C.NBD_REP_ERR_UNKNOWN, length: 2 });
    expect(() => W.decodeOptionReplyHeader(Buffer.alloc(20))).toThrow(/magic/);
    expect(() => W.decodeOptionHeader(Buffer.alloc(16))).toThrow(/magic/);
  });

  it("export name reply with and without zeroes", () => {
    expect(W.encodeExportNameReply(1 << 20, 3, false).length).toBe(134);
    const b = W.encodeExportNameReply(2 ** 40 + 5, 0x1ed, true);
    expect(b.length).toBe(10);
    expect(W.decodeExportNameReply(b)).toEqual({ size: 2 ** 40 + 5, transmissionFlags: 0x1ed });
  });

  it("NBD_REP_SERVER, info requests and replies", () => {
    expect(W.decodeServerReply(W.encodeServerReply("disk", "a disk"))).toEqual({ name: "disk", description: "a disk" });
    expect(W.decodeServerReply(W.encodeServerReply("é"))).toEqual({ name: "é", description: "" });
    const req = W.encodeInfoRequest("x", [C.NBD_INFO_NAME, C.NBD_INFO_BLOCK_SIZE]);
    expect(W.decodeInfoRequest(req)).toEqual({ name: "x", requests: [1, 3] });
    expect(() => W.decodeInfoRequest(Buffer.concat([req, Buffer.alloc(1)]))).toThrow(/length/);
    expect(() => W.decodeInfoRequest(Buffer.from([0, 0, 0, 9, 1]))).toThrow(W.WireError);
    const infos: W.InfoReply[] = [
      { type: C.NBD_INFO_EXPORT, size: 123456789012, transmissionFlags: 0x4ed },
      { type: C.NBD_INFO_NAME, name: "name" },
      { type: C.NBD_INFO_DESCRIPTION, description: "desc" },
      { type: C.NBD_INFO_BLOCK_SIZE, minimum: 1, preferred: 4096, maximum: 1 << 25 },
      { type: 77, raw: Buffer.from([1, 2]) },
    ];
    for (const i of infos) expect(W.decodeInfoReply(W.encodeInfoReply(i))).toEqual(i);
    expect(() => W.decodeInfoReply(Buffer.from([0, 0, 1]))).toThrow(/bad length/);
  });

  it("meta context request and reply", () => {
    const q = W.encodeMetaContextRequest("exp", ["base:allocation", "qemu:dirty-bitmap:x"]);
    expect(W.decodeMetaContextRequest(q)).toEqual({ exportName: "exp", queries: ["base:allocation", "qemu:dirty-bitmap:x"] });
    expect(W.decodeMetaContextRequest(W.encodeMetaContextRequest("", []))).toEqual({ exportName: "", queries: [] });
    expect(() => W.decodeMetaContextRequest(q.subarray(0, q.length - 1))).toThrow(W.WireError);
    expect(() => W.decodeMetaContextRequest(Buffer.concat([q, Buffer.alloc(1)]))).toThrow(/trailing/);
    expect(W.decodeMetaContextReply(W.encodeMetaContextReply(7, "base:allocation"))).toEqual({ id: 7, name: "base:allocation" });
  });
});

describe("wire: transmission", () => {
  it("request header round trip (28 bytes, 64-bit fields)", () => {
    const b = W.encodeRequest(C.NBD_CMD_FLAG_FUA, C.NBD_CMD_WRITE, 0xfedcba9876543210n, 2 ** 50 + 3, 0xffffffff);
    expect(b.length).toBe(C.NBD_REQUEST_SIZE);
    expect(b.readUInt32BE(0)).toBe(C.NBD_REQUEST_MAGIC);
    expect(W.decodeRequest(b)).toEqual({ flags: 1, type: 1, cookie: 0xfedcba9876543210n, offset: 2 ** 50 + 3, length: 0xffffffff });
    const big = W.encodeRequest(0, C.NBD_CMD_READ, 1n, 0xffffffffffffffffn, 1);
    expect(big.readBigUInt64BE(16)).toBe(0xffffffffffffffffn);
    expect(W.decodeRequest(big).offset).toBeGreaterThan(2 ** 63);
    const two = Buffer.concat([Buffer.alloc(3), b]);
    expect(W.decodeRequest(two, 3).cookie).toBe(0xfedcba9876543210n);
    expect(() => W.decodeRequest(Buffer.alloc(28))).toThrow(/magic/);
    expect(() => W.decodeRequest(b.subarray(1))).toThrow(W.WireError);
  });

  it("simple and structured reply headers", () => {
    const s = W.encodeSimpleReply(C.NBD_EINVAL, 42n);
    expect(s.length).toBe(16);
    expect(W.decodeSimpleReplyHeader(s)).toEqual({ error: 22, cookie: 42n });
    const h = W.encodeStructuredReplyHeader(C.NBD_REPLY_FLAG_DONE, C.NBD_REPLY_TYPE_ERROR, 2n ** 64n - 1n, 9);
    expect(h.length).toBe(20);
    expect(W.decodeStructuredReplyHeader(h)).toEqual({ flags: 1, type: C.NBD_REPLY_TYPE_ERROR, cookie: 2n ** 64n - 1n, length: 9 });
    expect(() => W.decodeSimpleReplyHeader(h)).toThrow(/magic/);
    expect(() => W.decodeStructuredReplyHeader(s.subarray(0, 16))).toThrow(W.WireError);
  });

  it("error, hole and block status payloads", () => {
    expect(W.decodeErrorPayload(W.encodeErrorPayload(C.NBD_ENOSPC, "full"), false)).toEqual({ error: 28, message: "full" });
    expect(W.decodeErrorPayload(W.encodeErrorPayload(5, "bad sector", 4096), true)).toEqual({ error: 5, message: "bad sector", offset: 4096 });
    expect(() => W.decodeErrorPayload(W.encodeErrorPayload(5, "x"), true)).toThrow(W.WireError);
    expect(W.decodeOffsetHole(W.encodeOffsetHole(2 ** 33, 65536))).toEqual({ offset: 2 ** 33, size: 65536 });
    expect(() => W.decodeOffsetHole(Buffer.alloc(11))).toThrow(W.WireError);
    const ext = [{ length: 4096, flags: 0 }, { length: 1 << 20, flags: C.NBD_STATE_HOLE | C.NBD_STATE_ZERO }];
    expect(W.decodeBlockStatusPayload(W.encodeBlockStatusPayload(3, ext))).toEqual({ contextId: 3, extents: ext });
    expect(() => W.decodeBlockStatusPayload(Buffer.alloc(4))).toThrow(W.WireError);
    expect(() => W.decodeBlockStatusPayload(Buffer.alloc(13))).toThrow(W.WireError);
  });

  it("readU64/writeU64 agree for numbers and bigints", () => {
    const b = Buffer.alloc(8);
    for (const v of [0, 1, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1]) {
      W.writeU64(b, v, 0);
      expect(W.readU64(b, 0)).toBe(v);
      expect(b.readBigUInt64BE(0)).toBe(BigInt(v));
      W.writeU64(b, BigInt(v), 0);
      expect(W.readU64(b, 0)).toBe(v);
    }
  });
});
