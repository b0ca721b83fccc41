// The server's transmission-phase wire code, unit by unit:
// src/actors/requests.ts (checkRequest, stackFlags), src/actors/byte-queue.ts,
// (the reply frames the server writes are src/protocol/transmission.ts's,
// tested in transmission-codec.test.ts).
import { describe, expect, it } from "vitest";
import { ByteQueue, EofError } from "../../src/actors/byte-queue.js";
import type { ExportInfo } from "../../src/options/export-info.js";
import { checkRequest, stackFlags, type RequestLimits } from "../../src/actors/requests.js";
import { FLAG_FAST_ZERO, FLAG_FUA, FLAG_MAY_TRIM, FLAG_REQ_ONE } from "../../src/backend/types.js";
import * as C from "../../src/protocol/constants.js";

const MiB = 1024 * 1024;
const { NBD_EINVAL: EINVAL, NBD_EPERM: EPERM, NBD_ENOSPC: ENOSPC } = C;
const ALL_FLAGS = C.NBD_FLAG_HAS_FLAGS | C.NBD_FLAG_SEND_FLUSH | C.NBD_FLAG_SEND_FUA | C.NBD_FLAG_SEND_TRIM |
  C.NBD_FLAG_SEND_WRITE_ZEROES | C.NBD_FLAG_SEND_DF | C.NBD_FLAG_SEND_CACHE | C.NBD_FLAG_SEND_FAST_ZERO;

function limits(
  o: Partial<ExportInfo> & { structuredReplies?: boolean; extendedHeaders?: boolean; contexts?: number } = {},
): RequestLimits {
  const { structuredReplies = true, extendedHeaders = false, contexts = 1, ...info } = o;
  return {
    info: { name: "", size: MiB, flags: ALL_FLAGS, description: null, blockSize: { minimum: 1, preferred: 4096, maximum: C.MAX_REQUEST_SIZE }, canWrite: true, canFua: true, ...info },
    structuredReplies,
    extendedHeaders,
    contexts,
  };
}

const CMDS = {
  READ: C.NBD_CMD_READ, WRITE: C.NBD_CMD_WRITE, FLUSH: C.NBD_CMD_FLUSH, TRIM: C.NBD_CMD_TRIM,
  CACHE: C.NBD_CMD_CACHE, WRITE_ZEROES: C.NBD_CMD_WRITE_ZEROES, BLOCK_STATUS: C.NBD_CMD_BLOCK_STATUS,
} as const;
type Cmd = keyof typeof CMDS;
const FLAG_NAMES: Record<number, string> = {
  [C.NBD_CMD_FLAG_FUA]: "FUA", [C.NBD_CMD_FLAG_NO_HOLE]: "NO_HOLE", [C.NBD_CMD_FLAG_DF]: "DF",
  [C.NBD_CMD_FLAG_REQ_ONE]: "REQ_ONE", [C.NBD_CMD_FLAG_FAST_ZERO]: "FAST_ZERO", [C.NBD_CMD_FLAG_PAYLOAD_LEN]: "PAYLOAD_LEN",
};
/** doc/proto.md: FUA on every command (once SEND_FUA is advertised); each other flag on its own command. */
const SPEC_ALLOWED: Record<Cmd, number> = {
  READ: C.NBD_CMD_FLAG_FUA | C.NBD_CMD_FLAG_DF,
  WRITE: C.NBD_CMD_FLAG_FUA,
  FLUSH: C.NBD_CMD_FLAG_FUA,
  TRIM: C.NBD_CMD_FLAG_FUA,
  CACHE: C.NBD_CMD_FLAG_FUA,
  WRITE_ZEROES: C.NBD_CMD_FLAG_FUA | C.NBD_CMD_FLAG_NO_HOLE | C.NBD_CMD_FLAG_FAST_ZERO,
  BLOCK_STATUS: C.NBD_CMD_FLAG_FUA | C.NBD_CMD_FLAG_REQ_ONE,
};
/** A request of this command that is fine in every other respect. */
const check = (cmd: Cmd, flags = 0, l = limits(), offset = 0, count = cmd === "FLUSH" ? 0 : 512) =>
  checkRequest(l, CMDS[cmd], flags, offset, count);

describe("checkRequest: command x flag", () => {
  for (const cmd of Object.keys(CMDS) as Cmd[]) {
    const allowed = Array.from({ length: 16 }, (_, i) => 1 << i).filter((b) => SPEC_ALLOWED[cmd] & b);
    it(`${cmd}: no flags, each allowed flag and all of them together are accepted`, () => {
      expect(check(cmd)).toBe(0);
      for (const b of allowed) expect(check(cmd, b), FLAG_NAMES[b]).toBe(0);
      expect(check(cmd, SPEC_ALLOWED[cmd])).toBe(0);
    });
    it(`${cmd}: every other flag bit is EINVAL`, () => {
      for (let i = 0; i < 16; i++) {
        const b = 1 << i;
        if (!(SPEC_ALLOWED[cmd] & b)) expect(check(cmd, b), FLAG_NAMES[b] ?? `bit ${i}`).toBe(EINVAL);
      }
      expect(check(cmd, SPEC_ALLOWED[cmd] | C.NBD_CMD_FLAG_PAYLOAD_LEN)).toBe(EINVAL);
    });
  }

  it("unknown commands are EINVAL", () => {
    for (const type of [C.NBD_CMD_RESIZE, 9, 0x7fff, 0xffff]) expect(checkRequest(limits(), type, 0, 0, 512)).toBe(EINVAL);
  });

  it("a flag needs what it depends on to have been negotiated", () => {
    const noFua = limits({ canFua: false, flags: ALL_FLAGS & ~C.NBD_FLAG_SEND_FUA });
    for (const cmd of Object.keys(CMDS) as Cmd[]) expect(check(cmd, C.NBD_CMD_FLAG_FUA, noFua), cmd).toBe(EINVAL);
    expect(check("READ", C.NBD_CMD_FLAG_DF, limits({ structuredReplies: false }))).toBe(EINVAL);
    expect(check("WRITE_ZEROES", C.NBD_CMD_FLAG_FAST_ZERO, limits({ flags: ALL_FLAGS & ~C.NBD_FLAG_SEND_FAST_ZERO }))).toBe(EINVAL);
    expect(check("BLOCK_STATUS", 0, limits({ contexts: 0 })), "no meta context selected").toBe(EINVAL);
    expect(check("BLOCK_STATUS", 0, limits({ contexts: 2 })), "two meta contexts selected").toBe(0);
  });

  it("a command needs its transmission flag advertised", () => {
    const without = (f: number) => limits({ flags: ALL_FLAGS & ~f });
    expect(check("FLUSH", 0, without(C.NBD_FLAG_SEND_FLUSH))).toBe(EINVAL);
    expect(check("TRIM", 0, without(C.NBD_FLAG_SEND_TRIM))).toBe(EINVAL);
    expect(check("CACHE", 0, without(C.NBD_FLAG_SEND_CACHE))).toBe(EINVAL);
    expect(check("WRITE_ZEROES", 0, without(C.NBD_FLAG_SEND_WRITE_ZEROES))).toBe(EINVAL);
  });
});

// NBD_CMD_FLAG_PAYLOAD_LEN (doc/proto.md, extended headers): "This flag MUST
// NOT be set unless extended headers were negotiated"; with them "the client
// MUST set this flag" on NBD_CMD_WRITE; on NBD_CMD_BLOCK_STATUS it means a
// payload of context ids, "only if NBD_FLAG_BLOCK_STATUS_PAYLOAD" was
// advertised; no other command takes a payload.
describe("checkRequest: NBD_CMD_FLAG_PAYLOAD_LEN", () => {
  const PL = C.NBD_CMD_FLAG_PAYLOAD_LEN;
  const ext = (o: Partial<ExportInfo> = {}) => limits({ extendedHeaders: true, ...o });
  const withPayloadStatus = ext({ flags: ALL_FLAGS | C.NBD_FLAG_BLOCK_STATUS_PAYLOAD });

  it("compact headers: the flag is EINVAL on every command, a WRITE without it is fine", () => {
    for (const cmd of Object.keys(CMDS) as Cmd[]) {
      expect(check(cmd, PL), cmd).toBe(EINVAL);
      expect(check(cmd, PL, limits({ flags: ALL_FLAGS | C.NBD_FLAG_BLOCK_STATUS_PAYLOAD })), `${cmd}, payload block status advertised`).toBe(EINVAL);
    }
    expect(check("WRITE", 0)).toBe(0);
    expect(check("WRITE", C.NBD_CMD_FLAG_FUA)).toBe(0);
  });

  it("extended headers: NBD_CMD_WRITE is taken with it or without it (qemu 10 leaves it out; its length is the payload's either way)", () => {
    expect(check("WRITE", 0, ext()), "WRITE without PAYLOAD_LEN").toBe(0);
    expect(check("WRITE", C.NBD_CMD_FLAG_FUA, ext()), "WRITE+FUA without PAYLOAD_LEN").toBe(0);
    expect(check("WRITE", PL, ext())).toBe(0);
    expect(check("WRITE", PL | C.NBD_CMD_FLAG_FUA, ext())).toBe(0);
    // The flag does not lift the other checks.
    expect(check("WRITE", PL | C.NBD_CMD_FLAG_DF, ext()), "DF on a WRITE").toBe(EINVAL);
    expect(check("WRITE", PL, ext(), MiB, 512), "past the end").toBe(ENOSPC);
    expect(check("WRITE", PL, ext({ canWrite: false, canFua: false, flags: C.NBD_FLAG_HAS_FLAGS | C.NBD_FLAG_READ_ONLY })), "read-only").toBe(EPERM);
  });

  it("extended headers: NBD_CMD_BLOCK_STATUS takes it only when NBD_FLAG_BLOCK_STATUS_PAYLOAD was advertised", () => {
    expect(check("BLOCK_STATUS", PL, ext()), "not advertised").toBe(EINVAL);
    expect(check("BLOCK_STATUS", PL, withPayloadStatus)).toBe(0);
    expect(check("BLOCK_STATUS", PL | C.NBD_CMD_FLAG_REQ_ONE, withPayloadStatus)).toBe(0);
    // Without the flag, the header form still works.
    expect(check("BLOCK_STATUS", 0, ext())).toBe(0);
    expect(check("BLOCK_STATUS", 0, withPayloadStatus)).toBe(0);
    expect(checkRequest({ ...withPayloadStatus, contexts: 0 }, C.NBD_CMD_BLOCK_STATUS, PL, 0, 512), "no meta context selected").toBe(EINVAL);
  });

  it("extended headers: every other command refuses it", () => {
    for (const cmd of ["READ", "FLUSH", "TRIM", "CACHE", "WRITE_ZEROES"] as const) {
      expect(check(cmd, PL, withPayloadStatus), cmd).toBe(EINVAL);
      expect(check(cmd, 0, withPayloadStatus), `${cmd} without it`).toBe(0);
    }
  });

  it("extended headers: the command x flag rules hold as with compact ones (WRITE with PAYLOAD_LEN)", () => {
    for (const cmd of Object.keys(CMDS) as Cmd[]) {
      const must = cmd === "WRITE" ? PL : 0;
      for (let i = 0; i < 16; i++) {
        const b = 1 << i;
        if (b === PL) continue;
        expect(check(cmd, b | must, withPayloadStatus), `${cmd} ${FLAG_NAMES[b] ?? `bit ${i}`}`).toBe(SPEC_ALLOWED[cmd] & b ? 0 : EINVAL);
      }
    }
  });
});

describe("checkRequest: read-only, ranges, lengths", () => {
  const ro = limits({
    canWrite: false, canFua: false,
    flags: C.NBD_FLAG_HAS_FLAGS | C.NBD_FLAG_READ_ONLY | C.NBD_FLAG_SEND_FLUSH | C.NBD_FLAG_SEND_DF | C.NBD_FLAG_SEND_CACHE,
  });

  it("read-only: every write is EPERM, before any other check; reads still work", () => {
    for (const cmd of ["WRITE", "TRIM", "WRITE_ZEROES"] as const) {
      expect(check(cmd, 0, ro), cmd).toBe(EPERM);
      expect(check(cmd, 0, ro, 2 * MiB, 512), `${cmd} past the end`).toBe(EPERM);
    }
    for (const cmd of ["READ", "FLUSH", "CACHE", "BLOCK_STATUS"] as const) expect(check(cmd, 0, ro), cmd).toBe(0);
  });

  it("ranges: writes and zeroes past the end are ENOSPC, everything else EINVAL (as nbdkit)", () => {
    const past = { READ: EINVAL, CACHE: EINVAL, BLOCK_STATUS: EINVAL, WRITE: ENOSPC, TRIM: EINVAL, WRITE_ZEROES: ENOSPC };
    for (const [cmd, e] of Object.entries(past) as [Cmd, number][]) {
      expect(check(cmd, 0, limits(), MiB - 512, 512), `${cmd} up to the end`).toBe(0);
      expect(check(cmd, 0, limits(), MiB - 512, 513), `${cmd} one byte over`).toBe(e);
      expect(check(cmd, 0, limits(), MiB, 1), `${cmd} at the end`).toBe(e);
      expect(check(cmd, 0, limits(), MiB + 4096, 1), `${cmd} beyond`).toBe(e);
      expect(check(cmd, 0, limits(), 2 ** 64 - 1, 1), `${cmd} at offset 2^64-1`).toBe(e);
      expect(check(cmd, 0, limits(), 512, 0xffffffff), `${cmd} huge count`).toBe(cmd === "READ" || cmd === "WRITE" ? EINVAL : e);
    }
  });

  it("zero-length requests are EINVAL (even where the range would be fine)", () => {
    for (const cmd of ["READ", "WRITE", "TRIM", "CACHE", "WRITE_ZEROES", "BLOCK_STATUS"] as const) {
      expect(check(cmd, 0, limits(), 0, 0), cmd).toBe(EINVAL);
      expect(check(cmd, 0, limits(), MiB, 0), `${cmd} at the end`).toBe(EINVAL);
    }
  });

  it("FLUSH must have offset 0 and length 0", () => {
    expect(check("FLUSH", 0, limits(), 0, 0)).toBe(0);
    expect(check("FLUSH", 0, limits(), 512, 0)).toBe(EINVAL);
    expect(check("FLUSH", 0, limits(), 0, 512)).toBe(EINVAL);
  });

  it("READ and WRITE larger than MAX_REQUEST_SIZE are EINVAL; other commands are not capped", () => {
    const big = limits({ size: 2 ** 40 });
    for (const cmd of ["READ", "WRITE"] as const) {
      expect(check(cmd, 0, big, 0, C.MAX_REQUEST_SIZE), cmd).toBe(0);
      expect(check(cmd, 0, big, 0, C.MAX_REQUEST_SIZE + 1), cmd).toBe(EINVAL);
    }
    for (const cmd of ["TRIM", "WRITE_ZEROES", "CACHE", "BLOCK_STATUS"] as const) expect(check(cmd, 0, big, 0, 0xffffffff), cmd).toBe(0);
  });
});

describe("stackFlags", () => {
  const F = C;
  it("maps NBD command flags to the stack's request flags", () => {
    expect(stackFlags(F.NBD_CMD_WRITE, F.NBD_CMD_FLAG_FUA)).toBe(FLAG_FUA);
    expect(stackFlags(F.NBD_CMD_TRIM, F.NBD_CMD_FLAG_FUA)).toBe(FLAG_FUA);
    expect(stackFlags(F.NBD_CMD_WRITE_ZEROES, 0)).toBe(FLAG_MAY_TRIM);
    expect(stackFlags(F.NBD_CMD_WRITE_ZEROES, F.NBD_CMD_FLAG_NO_HOLE)).toBe(0);
    expect(stackFlags(F.NBD_CMD_WRITE_ZEROES, F.NBD_CMD_FLAG_FUA | F.NBD_CMD_FLAG_FAST_ZERO)).toBe(FLAG_FUA | FLAG_MAY_TRIM | FLAG_FAST_ZERO);
    expect(stackFlags(F.NBD_CMD_BLOCK_STATUS, F.NBD_CMD_FLAG_REQ_ONE)).toBe(FLAG_REQ_ONE);
    expect(stackFlags(F.NBD_CMD_READ, F.NBD_CMD_FLAG_DF)).toBe(0);
  });
  it("FUA on a command that writes nothing is accepted but not passed down", () => {
    for (const t of [F.NBD_CMD_READ, F.NBD_CMD_FLUSH, F.NBD_CMD_CACHE]) expect(stackFlags(t, F.NBD_CMD_FLAG_FUA)).toBe(0);
    expect(stackFlags(F.NBD_CMD_BLOCK_STATUS, F.NBD_CMD_FLAG_FUA | F.NBD_CMD_FLAG_REQ_ONE)).toBe(FLAG_REQ_ONE);
  });
});

describe("ByteQueue", () => {
  const q2 = () => {
    const q = new ByteQueue();
    const a = Buffer.from([0, 1, 2, 3, 4, 5, 6, 7]);
    const b = Buffer.from([8, 9, 10, 11, 12, 13, 14, 15]);
    q.push(a);
    q.push(b);
    return { q, a, b };
  };
  /** Whether writing to src[at] shows through v[vAt] (small buffers share a pool: compare contents, not .buffer). */
  const aliases = (v: Buffer, vAt: number, src: Buffer, at: number) => {
    const old = src[at]!;
    src[at] = old ^ 0xff;
    const seen = v[vAt] === src[at];
    src[at] = old;
    return seen;
  };

  it("peek inside one chunk is a view of it; across chunks a copy with the right bytes", () => {
    const { q, a, b } = q2();
    const v = q.peek(2, 4);
    expect([...v]).toEqual([2, 3, 4, 5]);
    expect(aliases(v, 0, a, 2), "a view").toBe(true);
    const x = q.peek(6, 4);
    expect([...x]).toEqual([6, 7, 8, 9]);
    expect(aliases(x, 0, a, 6) || aliases(x, 2, b, 0), "a copy").toBe(false);
    expect([...q.peek(9, 3)]).toEqual([9, 10, 11]); // starts in the second chunk
    expect(q.peek(3, 0).length).toBe(0);
    expect(q.length).toBe(16); // peeking consumes nothing
  });

  it("u32 reads big-endian words inside and across chunks", () => {
    const { q } = q2();
    expect(q.u32(0)).toBe(0x00010203);
    expect(q.u32(6)).toBe(0x06070809);
    q.drop(5);
    expect(q.u32(0)).toBe(0x05060708);
  });

  it("take and drop advance across chunk boundaries; views stay valid", () => {
    const { q, b } = q2();
    const first = q.take(3);
    expect([...first]).toEqual([0, 1, 2]);
    q.drop(5); // exactly the rest of the first chunk
    expect(q.length).toBe(8);
    const v = q.take(2);
    expect(aliases(v, 0, b, 0), "a view").toBe(true);
    q.drop(3);
    expect([...q.take(3)]).toEqual([13, 14, 15]);
    expect(q.length).toBe(0);
    expect([...first]).toEqual([0, 1, 2]);
  });

  it("read(n) waits for n bytes over several pushes; read(0) is immediate", async () => {
    const q = new ByteQueue();
    const p = q.read(5);
    q.push(Buffer.from([1, 2]));
    q.push(Buffer.from([3]));
    q.push(Buffer.from([4, 5, 6]));
    expect([...(await p)]).toEqual([1, 2, 3, 4, 5]);
    expect(q.length).toBe(1);
    expect((await q.read(0)).length).toBe(0);
  });

  it("EOF: read rejects with EofError when the socket ends short; bytes already there are still read", async () => {
    const q = new ByteQueue();
    q.push(Buffer.from([1, 2, 3]));
    q.end();
    expect([...(await q.read(2))]).toEqual([1, 2]);
    const e = await q.read(2).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(EofError);
    expect((e as Error).message).toMatch(/closed the connection/);
    const later = new ByteQueue();
    const p = later.read(4);
    later.push(Buffer.from([9]));
    later.end();
    await expect(p).rejects.toBeInstanceOf(EofError);
  });

  it("skip drops bytes as they arrive and leaves what follows; EOF mid-skip rejects", async () => {
    const q = new ByteQueue();
    const s = q.skip(6);
    q.push(Buffer.from([1, 2, 3, 4]));
    q.push(Buffer.from([5, 6, 7, 8]));
    await s;
    expect([...q.take(2)]).toEqual([7, 8]);
    const t = q.skip(3);
    q.push(Buffer.from([1]));
    q.end();
    await expect(t).rejects.toBeInstanceOf(EofError);
  });
});
