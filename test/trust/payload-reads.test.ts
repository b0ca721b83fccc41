// WRITE payloads read in place (src/actors/socket-reader.ts): a payload is
// read straight into its own buffer, the next read guessed into a buffer
// for a WRITE like the last one, a read already under way copied over when
// the loop resumes after a pause. Whatever way the byte stream is cut, every
// byte lands where its request says: a seeded mix of small and large
// WRITEs (runs of equal sizes, so guesses hit, and changes of size, so they
// miss), FLUSHes and READs, sent in random slices with pauses between, each
// WRITE to its own region; then every region read back and compared.
import { afterEach, describe, expect, it } from "vitest";
import { CMD, openTransmission, type RawConn } from "../helpers/raw.js";
import { isNbdkit, startServer, type RunningServer } from "../helpers/server.js";

const KiB = 1024;
const MiB = 1024 * KiB;
const DISK = 64 * MiB;

/** A small seeded generator (xorshift32): the same stream every run. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 2 ** 32;
  };
}

interface Op {
  type: number;
  offset: number;
  length: number;
  data?: Buffer;
}

function header(type: number, handle: number, offset: number, length: number): Buffer {
  const h = Buffer.alloc(28);
  h.writeUInt32BE(0x25609513, 0);
  h.writeUInt16BE(type, 6);
  h.writeBigUInt64BE(BigInt(handle), 8);
  h.writeBigUInt64BE(BigInt(offset), 16);
  h.writeUInt32BE(length, 24);
  return h;
}

/** Requests and their bytes: WRITEs in runs of one size, each to a fresh region. */
function workload(seed: number, count: number): { ops: Op[]; stream: Buffer } {
  const r = rng(seed);
  const ops: Op[] = [];
  let at = 0;
  let size = 0;
  let run = 0;
  while (ops.length < count) {
    const pick = r();
    if (pick < 0.08) {
      ops.push({ type: CMD.FLUSH, offset: 0, length: 0 });
      continue;
    }
    if (pick < 0.16 && at > 0) {
      const length = 1 + Math.floor(r() * 8 * KiB);
      ops.push({ type: CMD.READ, offset: Math.floor(r() * (at - length > 0 ? at - length : 1)), length: Math.min(length, at) });
      continue;
    }
    if (run === 0) {
      // A new run: sizes around the in-place threshold (16 KiB), small ones, and large ones.
      const kind = r();
      size = kind < 0.3 ? 1 + Math.floor(r() * 16 * KiB) : kind < 0.5 ? 16 * KiB + Math.floor(r() * 3) - 1 : 32 * KiB + Math.floor(r() * 600 * KiB);
      run = 1 + Math.floor(r() * 6);
    }
    run--;
    if (at + size > DISK) break;
    const data = Buffer.alloc(size);
    for (let i = 0; i < size; i += 4) data.writeUInt32LE((ops.length * 2654435761 + i) >>> 0, i <= size - 4 ? i : size - 4);
    ops.push({ type: CMD.WRITE, offset: at, length: size, data });
    at += size + Math.floor(r() * 3) * 512;
  }
  const parts: Buffer[] = [];
  ops.forEach((op, i) => {
    parts.push(header(op.type, i + 1, op.offset, op.length));
    if (op.data) parts.push(op.data);
  });
  return { ops, stream: Buffer.concat(parts) };
}

/** Send the stream in random slices, some after a short pause. */
async function sendSliced(c: RawConn, stream: Buffer, seed: number): Promise<void> {
  const r = rng(seed);
  let pos = 0;
  while (pos < stream.length) {
    const n = Math.min(stream.length - pos, 1 + Math.floor(r() ** 3 * 400 * KiB));
    const ok = c.socket.write(stream.subarray(pos, pos + n));
    pos += n;
    if (!ok) await new Promise((res) => c.socket.once("drain", res));
    else if (r() < 0.2) await new Promise((res) => setTimeout(res, Math.floor(r() * 3)));
  }
}

/** Read one simple reply per request (READ data skipped); returns the errors by handle. */
async function replies(c: RawConn, ops: Op[]): Promise<Map<number, number>> {
  const got = new Map<number, number>();
  for (let i = 0; i < ops.length; i++) {
    const h = await c.read(16, 30_000);
    expect(h.readUInt32BE(0)).toBe(0x67446698);
    const handle = Number(h.readBigUInt64BE(8));
    got.set(handle, h.readUInt32BE(4));
    const op = ops[handle - 1]!;
    if (op.type === CMD.READ && h.readUInt32BE(4) === 0) await c.read(op.length, 30_000);
  }
  return got;
}

async function readBack(c: RawConn, offset: number, length: number, handle: number): Promise<Buffer> {
  c.socket.write(header(CMD.READ, handle, offset, length));
  const h = await c.read(16, 30_000);
  expect(h.readUInt32BE(4), `READ at ${offset}`).toBe(0);
  return c.read(length, 30_000);
}

describe.skipIf(isNbdkit)("WRITE payloads read in place land where their requests say", () => {
  let srv: RunningServer | undefined;
  afterEach(async () => {
    await srv?.stop();
    srv = undefined;
  });

  for (const [threads, seed] of [
    [16, 1],
    [1, 2],
    [4, 3],
  ] as const) {
    it(`-t ${threads}: ${threads === 1 ? "paused after every request (reads under way copied over)" : "requests pipelined"}, seed ${seed}`, async () => {
      srv = await startServer(["-t", String(threads), "memory", `size=${DISK}`]);
      const { conn } = await openTransmission(srv.sock);
      const { ops, stream } = workload(seed, 400);
      const answered = replies(conn, ops);
      await sendSliced(conn, stream, seed + 100);
      const errors = await answered;
      expect([...errors.values()].filter((e) => e !== 0), "every request succeeded").toEqual([]);
      let handle = ops.length + 1;
      for (const op of ops) {
        if (op.type !== CMD.WRITE) continue;
        const back = await readBack(conn, op.offset, op.length, handle++);
        expect(back.equals(op.data!), `WRITE of ${op.length} bytes at ${op.offset}`).toBe(true);
      }
      conn.socket.destroy();
    }, 60_000);
  }
});
