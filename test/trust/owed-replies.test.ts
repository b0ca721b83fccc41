// Every reply the spec says is owed arrives whole (issue 12.1): READs
// pipelined before NBD_CMD_DISC, or before the client's half-close, are all
// answered, every byte, before the server closes; on SIGTERM every request
// gets a whole reply (its data, or NBD_ESHUTDOWN for one read after the
// shutdown began), never a cut one, and the server exits 0.
//
// "NBD_CMD_DISC ... The server MUST handle all outstanding requests";
// "On a server shutdown, the server SHOULD wait for inflight requests to be
// serviced prior to initiating a hard disconnect. A server MAY speed this
// process up by issuing error replies ... NBD_ESHUTDOWN".
import { afterEach, describe, expect, it } from "vitest";
import { CMD, encodeRequest, newHandle, openTransmission, RawClosedError, type RawConn } from "../helpers/raw.js";
import { isNbdkit, startServer, waitFor, type RunningServer } from "../helpers/server.js";

const KiB = 1024;
const MiB = 1024 * KiB;
const ESHUTDOWN = 108;

interface Got {
  handle: bigint;
  error: number;
}

/** Read `n` simple replies to READs of `size` bytes: each header, then its whole data when error is 0. */
async function readReplies(c: RawConn, n: number, size: number, timeoutMs = 30_000): Promise<Got[]> {
  const out: Got[] = [];
  for (let i = 0; i < n; i++) {
    const h = await c.read(16, timeoutMs);
    expect(h.readUInt32BE(0), "simple reply magic").toBe(0x67446698);
    const error = h.readUInt32BE(4);
    const handle = h.readBigUInt64BE(8);
    if (error === 0) {
      const data = await c.read(size, timeoutMs);
      expect(data.length).toBe(size);
    }
    out.push({ handle, error });
  }
  return out;
}

function reads(n: number, size: number): { bytes: Buffer; handles: bigint[] } {
  const handles: bigint[] = [];
  const parts: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const handle = newHandle();
    handles.push(handle);
    parts.push(encodeRequest({ type: CMD.READ, handle, offset: (i * size) % (64 * MiB), length: size }));
  }
  return { bytes: Buffer.concat(parts), handles };
}

const SHAPES: [number, number][] = [
  [10, 64 * KiB],
  [40, MiB],
  [4, 32 * MiB],
];

describe.skipIf(isNbdkit)("owed replies arrive whole", () => {
  let srv: RunningServer | undefined;
  afterEach(async () => {
    await srv?.stop();
    srv = undefined;
  });

  for (const [n, size] of SHAPES) {
    it(`${n} READs of ${size / KiB} KiB then NBD_CMD_DISC in one write: all ${n} answered whole, then EOF`, async () => {
      srv = await startServer(["memory", "96M"]);
      const { conn } = await openTransmission(srv.sock);
      const r = reads(n, size);
      conn.write(Buffer.concat([r.bytes, encodeRequest({ type: CMD.DISC, handle: newHandle(), offset: 0, length: 0 })]));
      const got = await readReplies(conn, n, size);
      expect(got.map((g) => g.error)).toEqual(r.handles.map(() => 0));
      expect(got.map((g) => g.handle).sort()).toEqual([...r.handles].sort());
      expect(await conn.waitClosed(10_000), "the server closes after the last reply").toBe(true);
    }, 90_000);

    it(`${n} READs of ${size / KiB} KiB then shutdown(SHUT_WR): all ${n} answered whole, then EOF`, async () => {
      srv = await startServer(["memory", "96M"]);
      const { conn } = await openTransmission(srv.sock);
      const r = reads(n, size);
      conn.write(r.bytes);
      conn.end();
      const got = await readReplies(conn, n, size);
      expect(got.map((g) => g.error)).toEqual(r.handles.map(() => 0));
      expect(await conn.waitClosed(10_000)).toBe(true);
    }, 90_000);
  }

  it("SIGTERM with 8 clients × 8 READs of 1 MiB in flight: every reply whole (data or ESHUTDOWN), none cut; exit 0", async () => {
    srv = await startServer(["memory", "64M"]);
    const conns = await Promise.all(Array.from({ length: 8 }, () => openTransmission(srv!.sock)));
    const sent = conns.map(({ conn }) => {
      const r = reads(8, MiB);
      conn.write(r.bytes);
      return r;
    });
    // At once: most requests are not even read yet.
    process.kill(srv.pid, "SIGTERM");
    const results = await Promise.all(
      conns.map(async ({ conn }, i) => {
        try {
          const got = await readReplies(conn, 8, MiB);
          expect(got.map((g) => g.handle).sort()).toEqual([...sent[i]!.handles].sort());
          return got.map((g) => g.error);
        } catch (e) {
          if (e instanceof RawClosedError) throw new Error(`client ${i}: the connection ended before every reply (a reply cut or missing)`);
          throw e;
        }
      }),
    );
    for (const errs of results) for (const e of errs) expect([0, ESHUTDOWN]).toContain(e);
    for (const { conn } of conns) expect(await conn.waitClosed(10_000)).toBe(true);
    expect(await waitFor(() => srv!.exited, 15_000)).toBe(true);
    expect(srv.exitCode).toBe(0);
  }, 90_000);
});
