// Transmission worker threads (src/threads), as a user runs the server:
// connections go round the threads, and whichever thread serves a
// connection, every client sees one disk. The memory plugin's disk is one
// mapping every thread shares; the file plugin's connections each open
// the file; the null plugin has nothing to share.
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { NbdClient } from "../../src/client/client.js";
import { isNbdkit, makeTmpDir, removeTmpDir, startServer, waitFor, type RunningServer } from "../helpers/server.js";

const MiB = 1024 * 1024;
const HOLE_ZERO = 3;

/** How many of the connections so far -v says a worker serves. */
const servedByWorker = (srv: RunningServer) => (srv.stderr.match(/: served by a worker thread/g) ?? []).length;

describe.skipIf(isNbdkit)("transmission worker threads", () => {
  let srv: RunningServer | undefined;
  let dir: string | undefined;
  afterEach(async () => {
    await srv?.stop();
    srv = undefined;
    if (dir) removeTmpDir(dir);
    dir = undefined;
  });

  it("memory: connections alternate between threads and all see one disk (writes, zeroes, trims and block status across threads)", async () => {
    srv = await startServer(["-v", "--workers=1", "memory", "64M"]);
    expect(await waitFor(() => /transmission worker 1 ready/.test(srv!.stderr))).toBe(true);
    const a = await NbdClient.open({ path: srv.sock, metaContexts: ["base:allocation"] });
    const b = await NbdClient.open({ path: srv.sock, metaContexts: ["base:allocation"] });
    // One of the two is on the worker (they go round: this thread, then the worker).
    expect(await waitFor(() => servedByWorker(srv!) === 1)).toBe(true);
    const data = randomBytes(4 * MiB);
    await a.pwrite(data, 8 * MiB); // large: read from the socket straight into the shared pages
    await a.pwrite(data.subarray(0, 4096), 0); // small: through the queue
    expect((await b.pread(4 * MiB, 8 * MiB)).equals(data)).toBe(true);
    expect((await b.pread(4096, 0)).equals(data.subarray(0, 4096))).toBe(true);
    await b.pwrite(data.subarray(0, 65536), 32 * MiB);
    expect((await a.pread(65536, 32 * MiB)).equals(data.subarray(0, 65536))).toBe(true);
    // A trim on one thread is a hole on the other: in block status and as zeros.
    await b.trim(MiB, 8 * MiB);
    const st = await a.blockStatus(MiB, 8 * MiB);
    expect(st[0]).toMatchObject({ length: MiB, flags: HOLE_ZERO });
    expect((await a.pread(MiB, 8 * MiB)).every((x) => x === 0)).toBe(true);
    await a.zero(MiB, 9 * MiB);
    expect((await b.pread(MiB, 9 * MiB)).every((x) => x === 0)).toBe(true);
    expect((await b.pread(2 * MiB, 10 * MiB)).equals(data.subarray(2 * MiB))).toBe(true);
    await a.disconnect();
    await b.disconnect();
  });

  it("memory: 8 connections writing their own regions at once, then each region read back through another thread", async () => {
    srv = await startServer(["--workers=1", "memory", "64M"]);
    const conns = await Promise.all(Array.from({ length: 8 }, () => NbdClient.open({ path: srv!.sock })));
    const parts = conns.map(() => randomBytes(2 * MiB));
    await Promise.all(conns.map((c, i) => Promise.all([0, 1, 2, 3].map((k) => c.pwrite(parts[i]!.subarray(k * 512 * 1024, (k + 1) * 512 * 1024), i * 2 * MiB + k * 512 * 1024)))));
    const back = await Promise.all(conns.map((c, i) => c.pread(2 * MiB, ((i + 1) % 8) * 2 * MiB)));
    back.forEach((b, i) => expect(b.equals(parts[(i + 1) % 8]!), `region ${(i + 1) % 8}`).toBe(true));
    await Promise.all(conns.map((c) => c.disconnect()));
  });

  it("file: a write through the worker's connection is read through the main thread's, every byte", async () => {
    dir = makeTmpDir("nbdstate-workers-");
    const img = join(dir, "disk.img");
    writeFileSync(img, Buffer.alloc(8 * MiB));
    srv = await startServer(["-v", "--workers=1", "file", img]);
    const a = await NbdClient.open({ path: srv.sock });
    const b = await NbdClient.open({ path: srv.sock });
    expect(await waitFor(() => servedByWorker(srv!) === 1)).toBe(true);
    const data = randomBytes(MiB);
    await b.pwrite(data, MiB);
    await b.flush();
    expect((await a.pread(MiB, MiB)).equals(data)).toBe(true);
    await a.disconnect();
    await b.disconnect();
  });

  it("the status page's view of a worker's connection counts its requests and bytes", async () => {
    srv = await startServer(["-v", "--workers=1", "--status-page=127.0.0.1:0", "null", "64M"]);
    const m = await waitFor(() => /status page: http:\/\/127\.0\.0\.1:\d+/.test(srv!.stderr));
    expect(m).toBe(true);
    const url = /status page: (http:\/\/127\.0\.0\.1:\d+)/.exec(srv.stderr)![1]!;
    const a = await NbdClient.open({ path: srv.sock });
    const b = await NbdClient.open({ path: srv.sock });
    for (let i = 0; i < 10; i++) await b.pwrite(Buffer.alloc(65536, 1), i * 65536);
    const id = /(conn-\d+): served by a worker thread/.exec(srv.stderr)![1]!;
    type View = { connections: { id: string; requests: number | null; bytesRead: number }[] };
    const row = async () => ((await (await fetch(`${url}/status.json`)).json()) as View).connections.find((c) => c.id === id);
    expect(await waitFor(async () => (await row())?.requests === 10, 5000)).toBe(true);
    expect((await row())!.bytesRead).toBeGreaterThanOrEqual(10 * 65536);
    await a.disconnect();
    await b.disconnect();
  });

  it("no worker threads with --workers=0, with a filter, or for a plugin that cannot share (-v says why)", async () => {
    for (const [args, why] of [
      [["--workers=0", "memory", "1M"], null],
      [["--workers=1", "--filter=nofilter", "memory", "1M"], "no transmission workers: filters"],
      [["--workers=1", "pattern", "1M"], "no transmission workers: the pattern plugin"],
    ] as const) {
      srv = await startServer(["-v", ...args]);
      const c = await NbdClient.open({ path: srv.sock });
      const d = await NbdClient.open({ path: srv.sock });
      await c.pread(4096, 0);
      await d.pread(4096, 0);
      await c.disconnect();
      await d.disconnect();
      expect(servedByWorker(srv)).toBe(0);
      if (why) expect(srv.stderr).toContain(why);
      else expect(srv.stderr).not.toContain("transmission workers:");
      await srv.stop();
      srv = undefined;
    }
  });
});
