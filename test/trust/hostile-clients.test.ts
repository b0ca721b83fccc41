// Hostile clients cannot hold descriptors or memory (issue 12):
// - a client that gets the STARTTLS ACK and closes (or sends half a
//   ClientHello) frees its connection at once, not at a timeout;
// - `nbdinfo --list` of 1000 exports works: the option budget bounds
//   abuse without breaking what real clients do with large listings;
// - a stalled option payload (a header claiming more than is sent) is cut
//   by the option timeout like every other stall;
// - clients that flood FLUSH requests and never read the replies cannot
//   make the server hold more than a few MiB each, and what they cost is
//   given back once they leave.
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { CMD, encodeOption, encodeRequest, handshake, newHandle, OPT, openTransmission, RawConn, u32 } from "../helpers/raw.js";
import { archive, member } from "../filters/tar-craft.js";
import { isNbdkit, makeTmpDir, removeTmpDir, run, runOk, startServer, waitFor, type RunningServer } from "../helpers/server.js";
import { requireTools, TOOLS } from "../helpers/tools.js";

const fds = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;
const rssMiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) / 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.skipIf(isNbdkit)("hostile clients", () => {
  let dir: string;
  let srv: RunningServer | undefined;
  beforeAll(() => {
    dir = makeTmpDir("nbdstate-hostile-");
  });
  afterAll(() => removeTmpDir(dir));
  afterEach(async () => {
    await srv?.stop();
    srv = undefined;
  });

  it.skipIf(!requireTools([["psktool", "gnutls-bin"]]))("2000 clients that get the STARTTLS ACK and close leave the descriptor count where it was within a second", async () => {
    const keys = join(dir, "keys.psk");
    execFileSync("psktool", ["-u", "alice", "-p", keys], { stdio: "ignore" });
    srv = await startServer(["--tls=on", `--tls-psk=${keys}`, "memory", "1M"]);
    await sleep(200);
    const before = fds(srv.pid);
    const one = (partialHello: boolean) =>
      new Promise<void>((resolve) => {
        const s: Socket = connect(srv!.sock);
        let buf = Buffer.alloc(0);
        s.on("data", (d: Buffer) => {
          buf = Buffer.concat([buf, d]);
          if (buf.length === 18) s.write(Buffer.concat([u32(3), encodeOption(OPT.STARTTLS)]));
          // Greeting (18) + the STARTTLS reply (20): the ACK is in; go away.
          if (buf.length >= 38) {
            if (partialHello) s.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]));
            s.destroy();
          }
        });
        s.on("close", () => resolve());
        s.on("error", () => resolve());
      });
    for (let i = 0; i < 2000; i += 100) await Promise.all(Array.from({ length: 100 }, (_, k) => one((i + k) % 2 === 1)));
    const settled = await waitFor(() => fds(srv!.pid) <= before + 2, 1000, 20);
    expect(settled, `descriptors: ${before} before, ${fds(srv.pid)} after`).toBe(true);
    // And the server still serves.
    await runOk("nbdinfo", ["--size", srv.uri]);
  }, 120_000);

  it.skipIf(!requireTools([TOOLS.nbdinfo]))("nbdinfo --list of 1000 exports lists all of them", async () => {
    const d = join(dir, "many");
    execFileSync("mkdir", ["-p", d]);
    for (let i = 0; i < 1000; i++) writeFileSync(join(d, `e${String(i).padStart(4, "0")}`), Buffer.alloc(512));
    srv = await startServer(["file", `dir=${d}`]);
    const r = await runOk("nbdinfo", ["--list", "--json", srv.uri], { timeoutMs: 120_000 });
    const j = JSON.parse(r.stdout) as { exports: { "export-name": string }[] };
    expect(j.exports).toHaveLength(1000);
  }, 150_000);

  it.skipIf(!requireTools([TOOLS.nbdinfo]))("a tar of 10001 members in exportname mode: the listing fails whole (never cut at 10000 with an ACK); the server keeps serving", async () => {
    const t = join(dir, "many.tar");
    writeFileSync(t, archive(...Array.from({ length: 10001 }, (_, i) => member(`m${i}`, ""))));
    srv = await startServer(["--filter=tar", "-r", "file", t, "tar-entry=exportname", "tar-limit=0"]);
    const r = await run("nbdinfo", ["--list", srv.uri], { timeoutMs: 60_000 });
    expect(r.code).not.toBe(0);
    expect(srv.stderr + r.stderr).toMatch(/more than 10000 exports/);
    expect((await runOk("nbdinfo", ["--size", srv.uriFor("m5")])).stdout.trim()).toBe("0");
  }, 90_000);

  it("NBD_OPT_EXPORT_NAME with a NUL or a 5000-byte name closes the connection (there is no error reply)", async () => {
    srv = await startServer(["memory", "1M"]);
    for (const name of [Buffer.from([0x61, 0, 0x62]), Buffer.alloc(5000, 0x61)]) {
      const c = await RawConn.connect(srv.sock);
      await handshake(c);
      c.write(encodeOption(OPT.EXPORT_NAME, name));
      expect(await c.waitClosed(5000)).toBe(true);
    }
    await runOk("nbdinfo", ["--size", srv.uri]);
  });

  it("a stalled option payload (a GO that claims 1000 bytes and sends 10) is closed by the option timeout", async () => {
    srv = await startServer(["--timeout=1", "memory", "1M"]);
    const conns: RawConn[] = [];
    for (let i = 0; i < 20; i++) {
      const c = await RawConn.connect(srv.sock);
      await handshake(c);
      c.write(Buffer.concat([encodeOption(OPT.GO, Buffer.alloc(10), 1000)]));
      conns.push(c);
    }
    const closed = await Promise.all(conns.map((c) => c.waitClosed(5000)));
    expect(closed.every(Boolean)).toBe(true);
  }, 60_000);

  it("24 clients flooding FLUSH without reading replies keep RSS within 64 MiB of its start, and give it back after they close", async () => {
    srv = await startServer(["memory", "64M"]);
    // Warm up: clients doing what the flood does, so lazily allocated pools
    // count in the baseline; several, as connections go round the threads
    // (src/threads) and each thread has its own.
    for (let i = 0; i < 4; i++) {
      const warm = await openTransmission(srv.sock);
      warm.conn.destroy();
    }
    await sleep(500);
    const start = rssMiB(srv.pid);
    const flush = encodeRequest({ type: CMD.FLUSH, handle: newHandle(), offset: 0, length: 0 });
    const batch = Buffer.concat(Array.from({ length: 4096 }, () => flush));
    const clients = await Promise.all(Array.from({ length: 24 }, () => openTransmission(srv!.sock)));
    const deadline = Date.now() + 3000;
    // Write as long as the socket takes it; the server stops reading once its bound is reached.
    await Promise.all(
      clients.map(async ({ conn }) => {
        while (Date.now() < deadline) {
          if (!conn.socket.writableNeedDrain) conn.write(batch);
          await sleep(20);
        }
      }),
    );
    const peak = rssMiB(srv.pid);
    expect(peak - start, `RSS ${start.toFixed(0)} MiB at start, ${peak.toFixed(0)} MiB with 24 floods`).toBeLessThan(64);
    for (const { conn } of clients) conn.destroy();
    await sleep(1500);
    const after = rssMiB(srv.pid);
    expect(after - start, `RSS ${after.toFixed(0)} MiB after the floods left (start ${start.toFixed(0)})`).toBeLessThan(16);
    await runOk("nbdinfo", ["--size", srv.uri]);
  }, 60_000);

  it("1000 connections that come and go (100 at a time, each to transmission and a 64 KiB read) leave RSS within 24 MiB of its start", async () => {
    srv = await startServer(["memory", "64M"]);
    const once = async () => {
      const { conn } = await openTransmission(srv!.sock);
      conn.write(encodeRequest({ type: CMD.READ, handle: newHandle(), offset: 0, length: 65536 }));
      await conn.read(16 + 65536);
      conn.destroy();
    };
    // Warm up with one round, so pools and compiled code count in the baseline.
    await Promise.all(Array.from({ length: 100 }, once));
    await sleep(1500);
    const start = rssMiB(srv.pid);
    for (let round = 0; round < 10; round++) await Promise.all(Array.from({ length: 100 }, once));
    await sleep(1500);
    const after = rssMiB(srv.pid);
    expect(after - start, `RSS ${start.toFixed(0)} MiB before, ${after.toFixed(0)} MiB after 1000 connections came and went`).toBeLessThan(24);
  }, 60_000);
});
