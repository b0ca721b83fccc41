// The cow filter: writes go to an overlay shared by every connection (one
// per export), the layer below is opened read-only and never written.
// Differential against nbdkit's cow filter (flags, every reply, every byte,
// block status), the layer below untouched (file bytes and mtime, a plugin
// that records how it was opened), block status of the overlay, the
// cow-on-read / cow-on-cache modes, 8 concurrent clients, real clients
// (nbdcopy, qemu-img), the nbd plugin below.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FLAG_FUA, type Plugin } from "../../src/backend/types.js";
import { openClient, type NbdClient } from "../../src/client/index.js";
import createCow from "../../src/filters/cow/index.js";
import * as C from "../../src/protocol/constants.js";
import { patternBuffer } from "../helpers/pattern.js";
import { makeTmpDir, runCli, runOk, startServer, waitFor, type RunningServer } from "../helpers/server.js";
import { runningStack } from "../helpers/stack.js";
import { requireTools, TOOLS } from "../helpers/tools.js";
import { startNbdkitAt } from "../helpers/upstream.js";
import { copyOut, expectSameInfo, expectSameReplies, py, pyOut, sha, startPair, stateTools } from "./state-helpers.js";

const ok = stateTools() && requireTools([TOOLS.qemuImg]);
const MiB = 1024 * 1024;

describe.skipIf(!ok)("cow filter: the same command line as nbdkit", () => {
  // nbdkit 1.32's cow filter has a zero callback but does not advertise it
  // (can_zero is the read-only plugin's); nbdstate offers zero and fast zero,
  // and qemu:allocation-depth besides base:allocation.
  const zeroes = { can_zero: true, can_fast_zero: true, contexts: ["base:allocation", "qemu:allocation-depth"] };
  // Without zero requests (nbdkit would refuse them), replies, bytes and block status must be equal.
  const ops = ["--ops=read,write,write,trim,flush,cache,status,oob", "--exact-status"];

  it("over memory: flags, and 300 random requests give the same replies, bytes and block status", async () => {
    const pair = await startPair(["--filter=cow", "memory", "4M"]);
    try {
      await expectSameInfo(pair, zeroes);
      await expectSameReplies(pair, 1, 300, ops);
    } finally {
      await pair.stop();
    }
  });

  it("over pattern with cow-on-read=true and cow-block-size=4K: the same, on two connections each", async () => {
    const pair = await startPair(["--filter=cow", "pattern", "3M", "cow-on-read=true", "cow-block-size=4K"]);
    try {
      const info = await expectSameInfo(pair, zeroes);
      expect(info.block_size_preferred).toBe(4096);
      await expectSameReplies(pair, 2, 300, [...ops, "--conns=2"]);
    } finally {
      await pair.stop();
    }
  });

  it("over a file whose size is not a multiple of the block size (a short last block)", async () => {
    const dir = makeTmpDir();
    const file = join(dir, "odd.img");
    writeFileSync(file, randomBytes(MiB + 1234));
    const pair = await startPair(["--filter=cow", "file", file]);
    try {
      // Rotational is the file plugin's answer (nbdstate reads it from sysfs), not the filter's.
      await expectSameInfo(pair, zeroes, ["is_rotational"]);
      await expectSameReplies(pair, 3, 200, ops);
    } finally {
      await pair.stop();
    }
  });

  it("bad parameters fail to start, as nbdkit", async () => {
    for (const bad of ["cow-block-size=1000", "cow-block-size=2K", "cow-on-read=perhaps", "cow-on-cache=sometimes"]) {
      const r = await runCli(["--filter=cow", "memory", "1M", bad, "--run", "true"]);
      expect(r.code, bad).not.toBe(0);
      expect(r.stderr, bad).toMatch(/cow: cow-/);
      expect(r.stderr.trim().split("\n").length, `one line: ${r.stderr}`).toBe(1);
      const k = await runOk("nbdkit", ["--filter=cow", "memory", "1M", bad, "--run", "true"]).catch((e) => e);
      expect(k, `nbdkit accepts ${bad}`).toBeInstanceOf(Error);
    }
  });
});

describe.skipIf(!ok)("cow filter: the layer below is never written", () => {
  it("a file below keeps its bytes and mtime through writes, zeroes, trims and flushes of several clients", async () => {
    const dir = makeTmpDir();
    const file = join(dir, "base.img");
    const base = randomBytes(2 * MiB);
    writeFileSync(file, base);
    const before = statSync(file);
    const srv = await startServer(["--filter=cow", "file", file]);
    try {
      const data = randomBytes(3 * 65536 + 512); // qemu-img writes whole sectors
      const src = join(dir, "src.img");
      writeFileSync(src, data);
      await runOk("qemu-img", ["convert", "-n", "-f", "raw", "-O", "raw", src, srv.uri], { timeoutMs: 60_000 });
      await py(
        `
h = connect()
h.zero(65536, 4 * 65536, nbd.CMD_FLAG_NO_HOLE)
h.trim(65536, 6 * 65536)
h.pwrite(b"tail", 2 * 1024 * 1024 - 4, nbd.CMD_FLAG_FUA)
h.flush()
print("OK")`,
        srv.uri,
      );
      const got = await copyOut(srv.uri, dir);
      const want = Buffer.from(base);
      data.copy(want, 0);
      want.fill(0, 4 * 65536, 5 * 65536);
      want.fill(0, 6 * 65536, 7 * 65536);
      want.write("tail", 2 * MiB - 4);
      expect(sha(got)).toBe(sha(want));
    } finally {
      await srv.stop();
    }
    const after = statSync(file);
    expect(after.mtimeMs).toBe(before.mtimeMs);
    expect(after.size).toBe(before.size);
    expect(sha(readFileSync(file))).toBe(sha(base));
  });

  it("the plugin below is opened read-only and gets no write, zero, trim or flush (in-process)", async () => {
    const calls: string[] = [];
    const data = patternBuffer(0, 256 * 1024);
    const plugin: Plugin = {
      name: "recorder",
      open(readonly) {
        calls.push(`open ${readonly ? "ro" : "rw"}`);
        return {};
      },
      getSize: () => data.length,
      canWrite: () => true,
      pread(_h, buf, off) {
        data.copy(buf, 0, off, off + buf.length);
      },
      pwrite() {
        calls.push("pwrite");
      },
      zero() {
        calls.push("zero");
      },
      trim() {
        calls.push("trim");
      },
      flush() {
        calls.push("flush");
      },
    };
    const stack = await runningStack(plugin, [createCow()], [["cow-block-size", "4096"]]);
    const o = await stack.open(false, "", false);
    expect(await o.ctx.canWrite()).toBe(true);
    // Stack flags (types.ts), not the wire's: FLAG_FUA.
    await o.ctx.pwrite(Buffer.from("abc"), 5000, FLAG_FUA);
    await o.ctx.zero(10000, 20000, 0);
    await o.ctx.trim(8192, 40960, 0);
    await o.ctx.flush(0);
    const b = Buffer.alloc(8);
    await o.ctx.pread(b, 4999, 0);
    expect(b).toEqual(Buffer.concat([data.subarray(4999, 5000), Buffer.from("abc"), data.subarray(5003, 5007)]));
    await stack.close(o);
    await stack.unload();
    expect(calls).toEqual(["open ro"]);
  });

  it("over the nbd plugin: the upstream server's bytes do not change", async () => {
    const dir = makeTmpDir();
    const up = await startNbdkitAt(join(dir, "up.sock"), ["pattern", "1M"]);
    const srv = await startServer(["--filter=cow", "nbd", `socket=${join(dir, "up.sock")}`]);
    try {
      await py(`h = connect(); h.pwrite(b"\\xff" * 70000, 1000); h.flush(); eq(h.pread(4, 999), pattern(999, 1) + b"\\xff" * 3); print("OK")`, srv.uri);
      const upstream = await copyOut(`nbd+unix:///?socket=${join(dir, "up.sock")}`, dir, "up.img");
      expect(sha(upstream)).toBe(sha(patternBuffer(0, MiB)));
    } finally {
      await srv.stop();
      await up.stop();
    }
  });
});

describe.skipIf(!ok)("cow filter: block status and copy modes", () => {
  let srv: RunningServer;
  let dir: string;
  beforeAll(async () => {
    dir = makeTmpDir();
    srv = await startServer(["--filter=cow", "memory", "1M", "cow-block-size=4K", `cow-on-read=${join(dir, "cor")}`, "cow-on-cache=true"]);
  });
  afterAll(async () => {
    await srv?.stop();
  });

  it("written blocks are data, zeroed ones zero, trimmed ones holes, the rest as below; fast zero is honest", async () => {
    await py(
      `
h = connect()
h.pwrite(b"x" * 4096, 0)
h.zero(8192, 8192, nbd.CMD_FLAG_NO_HOLE)        # allocated zeroes
h.zero(8192, 16384)                             # may punch: a hole
h.pwrite(b"y" * 4096, 32768)
h.trim(4096, 32768)
h.pwrite(b"z", 40960 + 100)                     # part of a block: data
eq(extents(h, 65536, 0), [(0, 4096, 0), (4096, 4096, 3), (8192, 8192, 2), (16384, 24576, 3),
                          (40960, 4096, 0), (45056, 20480, 3)], "map")
eq(h.pread(4096, 32768), bytes(4096), "trimmed reads as zeroes")
# Fast zero: whole blocks (state only) and partial blocks already in the overlay are fast;
# a partial block still below would need a read there, so it is refused.
h.zero(4096, 49152, nbd.CMD_FLAG_FAST_ZERO)
h.zero(10, 40960 + 50, nbd.CMD_FLAG_FAST_ZERO)
expect_err(errno.ENOTSUP, h.zero, 10, 57344 + 5, nbd.CMD_FLAG_FAST_ZERO)
eq(extents(h, 4096, 57344), [(57344, 4096, 3)], "a refused fast zero changes nothing")
print("OK")`,
      srv.uri,
    );
  });

  it("cow-on-read=/PATH copies what is read only while PATH exists; cow-on-cache=true copies on cache requests", async () => {
    const out = await pyOut(
      `
import os
h = connect()
h.pread(4096, 65536)                 # PATH absent: nothing copied
print(extents(h, 4096, 65536)[0][2])
open(EXTRA[0], "w").close()
h.pread(4096, 65536)                 # PATH present: copied up, now data
print(extents(h, 4096, 65536)[0][2])
os.unlink(EXTRA[0])
h.pread(4096, 131072)
print(extents(h, 4096, 131072)[0][2])
h.cache(4096 * 2, 196608)
print(extents(h, 8192, 196608))
`,
      srv.uri,
      [join(dir, "cor")],
    );
    expect(out.trim().split("\n")).toEqual(["3", "0", "3", "[(196608, 8192, 0)]"]);
  });
});

describe.skipIf(!ok)("cow filter: one overlay per export, shared by all its clients", () => {
  it("file dir=: a write to one export is not seen in another; every client of an export sees it", async () => {
    const dir = makeTmpDir();
    const d = join(dir, "exports");
    mkdirSync(d);
    writeFileSync(join(d, "a"), Buffer.alloc(MiB, 0x61));
    writeFileSync(join(d, "b"), Buffer.alloc(MiB, 0x62));
    const srv = await startServer(["--filter=cow", "file", `dir=${d}`]);
    try {
      await py(
        `
a1 = connect(URI.replace("/?", "/a?"))
a2 = connect(URI.replace("/?", "/a?"))
b = connect(URI.replace("/?", "/b?"))
assert a1.can_multi_conn()
a1.pwrite(b"written", 100)
eq(a2.pread(7, 100), b"written", "other client, same export")
eq(b.pread(7, 100), b"b" * 7, "other export")
print("OK")`,
        srv.uri,
      );
      expect(readFileSync(join(d, "a")).subarray(100, 107)).toEqual(Buffer.alloc(7, 0x61));
    } finally {
      await srv.stop();
    }
  });
});

describe.skipIf(!ok)("cow filter: 8 concurrent clients", () => {
  it("interleaved partial-block writes, reads copying blocks up meanwhile: nothing lost", async () => {
    const SIZE = 2 * MiB;
    const SECTOR = 512;
    const CLIENTS = 8;
    const srv = await startServer(["--filter=cow", "pattern", String(SIZE), "cow-block-size=4K", "cow-on-read=true"]);
    const clients: NbdClient[] = [];
    try {
      for (let i = 0; i < CLIENTS; i++) clients.push(await openClient({ path: srv.sock }));
      const model = patternBuffer(0, SIZE);
      let seed = 7;
      const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) % n);
      // Client i owns the sectors s with s % 8 == i: every 4K block is written by all 8.
      const owned = (i: number) => Array.from({ length: SIZE / SECTOR / CLIENTS }, (_, k) => (k * CLIENTS + i) * SECTOR);
      const rounds = 3;
      await Promise.all(
        clients.map(async (c, i) => {
          const mine = owned(i);
          for (let r = 0; r < rounds; r++) {
            // A round writes each owned sector once (different sectors in flight together),
            // with reads of random places in between (cow-on-read copies blocks up).
            const order = [...mine].sort(() => rnd(3) - 1);
            const inflight: Promise<void>[] = [];
            for (const off of order) {
              const data = Buffer.alloc(SECTOR, (i * 31 + r * 7 + off / SECTOR) & 0xff);
              inflight.push(
                c.pwrite(data, off).then(() => {
                  data.copy(model, off);
                }),
              );
              if (inflight.length >= 16) await Promise.all(inflight.splice(0));
              if (rnd(8) === 0) inflight.push(c.pread(4096 * 3, rnd(SIZE / 4096 - 3) * 4096).then(() => {}));
            }
            await Promise.all(inflight);
            // Read-your-writes: this client's sectors hold what it wrote this round.
            for (const off of mine.slice(0, 64)) {
              const got = await c.pread(SECTOR, off);
              expect(got[0], `client ${i} round ${r} sector at ${off}`).toBe((i * 31 + r * 7 + off / SECTOR) & 0xff);
            }
          }
        }),
      );
      const whole = Buffer.concat(await Promise.all(Array.from({ length: SIZE / MiB }, (_, k) => clients[k % CLIENTS]!.pread(MiB, k * MiB))));
      for (let off = 0; off < SIZE; off += SECTOR) {
        if (!whole.subarray(off, off + SECTOR).equals(model.subarray(off, off + SECTOR))) {
          throw new Error(`sector at ${off}: got ${whole[off]}, want ${model[off]}`);
        }
      }
    } finally {
      await Promise.all(clients.map((c) => c.disconnect().catch(() => c.destroy())));
      await srv.stop();
    }
  });
});

describe.skipIf(!ok || !requireTools([["qemu-nbd", "qemu-utils"], TOOLS.qemuIo]))("cow filter: qemu:allocation-depth as qemu-nbd serves a qcow2 overlay", () => {
  it("written blocks are depth 1 (local), the rest depth 2 (backing) even where the raw file below has holes; nested cow adds a level", async () => {
    const dir = makeTmpDir();
    const back = join(dir, "back.raw");
    const BS = 64 * 1024;
    // 4 MiB with data only in blocks 10 and 11: the rest is a hole in the raw file.
    writeFileSync(back, Buffer.alloc(0));
    await runOk("truncate", ["-s", "4M", back]);
    await runOk("dd", [`if=/dev/urandom`, `of=${back}`, `bs=${BS}`, "count=2", "seek=10", "conv=notrunc", "status=none"]);
    const overlay = join(dir, "ov.qcow2");
    await runOk("qemu-img", ["create", "-q", "-f", "qcow2", "-b", back, "-F", "raw", overlay]);
    // Writes in blocks 1 and 11 (qcow2 clusters are 64K, the cow blocks too).
    await runOk("qemu-io", ["-c", `write ${BS} 100`, "-c", `write ${11 * BS + 5} 10`, overlay]);
    const map = async (uri: string) => (await runOk("nbdinfo", ["--map=qemu:allocation-depth", uri])).stdout.trim().split("\n").map((l) => l.trim().split(/\s+/).slice(0, 3).join(" "));
    const writeSame = `h = connect()\nh.pwrite(b"x" * 100, ${BS})\nh.pwrite(b"y" * 10, ${11 * BS + 5})\nprint("OK")\n`;

    const qsock = join(dir, "q.sock");
    const qemu = spawn("qemu-nbd", ["-k", qsock, "-A", "-r", "-f", "qcow2", overlay], { stdio: "ignore" });
    try {
      expect(await waitFor(() => existsSync(qsock))).toBe(true);
      const ours = await startServer(["--filter=cow", "file", back]);
      try {
        await py(writeSame, ours.uri);
        const want = await map(`nbd+unix:///?socket=${qsock}`);
        expect(want).toEqual([`0 ${BS} 2`, `${BS} ${BS} 1`, `${2 * BS} ${9 * BS} 2`, `${11 * BS} ${BS} 1`, `${12 * BS} ${4 * MiB - 12 * BS} 2`]);
        expect(await map(ours.uri)).toEqual(want);
      } finally {
        await ours.stop();
      }
      // cow over cow: the lower overlay's depth, one deeper.
      const nested = await startServer(["--filter=cow", "--filter=cow", "file", back]);
      try {
        await py(writeSame, nested.uri);
        expect(await map(nested.uri)).toEqual([`0 ${BS} 3`, `${BS} ${BS} 1`, `${2 * BS} ${9 * BS} 3`, `${11 * BS} ${BS} 1`, `${12 * BS} ${4 * MiB - 12 * BS} 3`]);
      } finally {
        await nested.stop();
      }
    } finally {
      qemu.kill("SIGTERM");
    }
  });
});

