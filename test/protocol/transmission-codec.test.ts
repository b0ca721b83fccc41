// The one transmission codec (src/protocol/transmission.ts) that the
// server writes replies with and the client reads them with: both header
// styles, round trips and the spec's byte layouts.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import * as C from "../../src/protocol/constants.js";
import * as T from "../../src/protocol/transmission.js";

const cookieArb = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
const halves = (c: bigint): [number, number] => [Number(c >> 32n), Number(c & 0xffffffffn)];

describe("requests", () => {
  it("compact: 28 bytes, magic 0x25609513, 32-bit length; extended: 32 bytes, magic 0x21e41c71, 64-bit length", () => {
    const a = Buffer.alloc(28);
    T.writeRequest(a, 0, false, C.NBD_CMD_FLAG_FUA, C.NBD_CMD_WRITE, 0x0102030405060708n, 0x1122334455, 4096);
    expect(a.toString("hex")).toBe("25609513" + "0001" + "0001" + "0102030405060708" + "0000001122334455" + "00001000");
    const b = Buffer.alloc(32);
    T.writeRequest(b, 0, true, C.NBD_CMD_FLAG_PAYLOAD_LEN, C.NBD_CMD_TRIM, 7n, 0, 2 ** 40);
    expect(b.toString("hex")).toBe("21e41c71" + "0020" + "0004" + "0000000000000007" + "0000000000000000" + "0000010000000000");
  });

  it("round-trips every field in both styles", () => {
    fc.assert(
      fc.property(
        fc.boolean(), fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xffff }), cookieArb,
        fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), fc.integer({ min: 0, max: 2 ** 32 - 1 }),
        (ext, flags, type, cookie, offset, length) => {
          const buf = Buffer.alloc(40);
          T.writeRequest(buf, 3, ext, flags, type, cookie, offset, length);
          const h = T.newRequestHeader();
          expect(T.readRequest(buf, 3, ext, h)).toBe(true);
          expect(h).toEqual({ flags, type, cookieHi: halves(cookie)[0], cookieLo: halves(cookie)[1], offset, length });
          // The other style's magic is refused.
          expect(T.readRequest(buf, 3, !ext, T.newRequestHeader())).toBe(false);
        },
      ),
    );
  });
});

describe("replies", () => {
  it("simple reply: magic, error, cookie echoed", () => {
    const b = Buffer.alloc(16);
    T.writeSimpleReply(b, 0, C.NBD_EIO, 0xdeadbeef, 0x00c0ffee);
    expect(b.toString("hex")).toBe("67446698" + "00000005" + "deadbeef00c0ffee");
    expect(T.readReply(b, 0, 16)).toMatchObject({ kind: "simple", error: 5, cookie: 0xdeadbeef00c0ffeen });
    expect(T.readReply(b, 0, 15)).toBeNull();
  });

  it("extended reply echoes the request offset and carries a 64-bit length", () => {
    const b = Buffer.alloc(32);
    T.writeChunk(b, 0, true, C.NBD_REPLY_FLAG_DONE, C.NBD_REPLY_TYPE_NONE, 1, 2, 2 ** 35, 0);
    expect(b.toString("hex")).toBe("6e8a278c" + "0001" + "0000" + "0000000100000002" + "0000000800000000" + "0000000000000000");
    expect(T.readReply(b, 0, 32)).toMatchObject({ kind: "extended", size: 32, flags: 1, type: 0, cookie: (1n << 32n) | 2n, offset: 2 ** 35, length: 0 });
  });

  it("chunk headers round-trip in both styles", () => {
    fc.assert(
      fc.property(fc.boolean(), fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xffff }), cookieArb,
        fc.integer({ min: 0, max: 2 ** 48 }), fc.integer({ min: 0, max: 2 ** 32 - 1 }), (ext, flags, type, cookie, off, len) => {
          const b = Buffer.alloc(T.chunkHeaderSize(ext));
          T.writeChunk(b, 0, ext, flags, type, ...halves(cookie), off, len);
          const h = T.readReply(b, 0, b.length)!;
          expect(h.kind).toBe(ext ? "extended" : "structured");
          expect([h.flags, h.type, h.cookie, h.length]).toEqual([flags, type, cookie, len]);
          expect(h.offset).toBe(ext ? off : 0);
        }),
    );
  });

  it("a magic that starts no reply is refused", () => {
    expect(() => T.readReply(Buffer.from("12345678", "hex"), 0, 4)).toThrow(/bad reply magic 0x12345678/);
  });
});

describe("payloads", () => {
  it("BLOCK_STATUS: 4 + 8n bytes; BLOCK_STATUS_EXT: 8 + 16n bytes with a descriptor count and 64-bit lengths", () => {
    const ext = [{ length: 4096, type: 3 }, { length: 2 ** 33, type: 0 }];
    const a = Buffer.alloc(T.blockStatusSize(false, 1));
    T.writeBlockStatus(a, 0, false, 1, [ext[0]!]);
    expect(a.toString("hex")).toBe("00000001" + "00001000" + "00000003");
    const b = Buffer.alloc(T.blockStatusSize(true, 2));
    expect(b.length).toBe(40);
    T.writeBlockStatus(b, 0, true, 9, ext);
    expect(b.toString("hex")).toBe(
      "00000009" + "00000002" + "0000000000001000" + "0000000000000003" + "0000000200000000" + "0000000000000000",
    );
    expect(T.readBlockStatus(b, 0, b.length, true)).toEqual({ contextId: 9, extents: [{ length: 4096, flags: 3 }, { length: 2 ** 33, flags: 0 }] });
    expect(() => T.readBlockStatus(b, 0, 24, true)).toThrow(/descriptors/);
  });

  it("OFFSET_HOLE is 12 bytes (64-bit offset, 32-bit size); ERROR is error, length, message", () => {
    const h = Buffer.alloc(12);
    T.writeOffsetHole(h, 0, 2 ** 40, 65536);
    expect(T.readOffsetHole(h, 0)).toEqual({ offset: 2 ** 40, size: 65536 });
    const m = Buffer.from("no such block");
    const e = Buffer.alloc(T.errorPayloadSize(m.length));
    T.writeErrorPayload(e, 0, C.NBD_ENOSPC, m);
    expect(T.readErrorPayload(e, 0, e.length, false)).toEqual({ error: 28, message: "no such block" });
    expect(() => T.readErrorPayload(e, 0, 10, false)).toThrow();
  });

  it("BLOCK_STATUS request payload: 64-bit effect length then 32-bit context ids", () => {
    const b = Buffer.alloc(16);
    T.writeBlockStatusPayload(b, 0, 2 ** 36, [1, 2]);
    expect(T.readBlockStatusPayload(b, 0, 16)).toEqual({ effectLength: 2 ** 36, ids: [1, 2] });
    expect(T.readBlockStatusPayload(b, 0, 10)).toBeNull();
  });
});
