// The dirty filter (changed-block tracking): the backup scenario end to end
// with real clients (writes from python3-libnbd, the bitmap read by nbdinfo
// --map and by qemu-img map's x-dirty-bitmap, an incremental copy of only
// the dirty extents), the bitmap across a clean restart, and all-dirty
// after kill -9. Plus the bitmap's own arithmetic and bad parameters.
import { createHash, randomBytes } from "node:crypto";
import { copyFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { DirtyBitmap } from "../../src/filters/dirty/bitmap.js";
import { isNbdkit, makeTmpDir, runCli, runOk, startServer, waitFor, type RunningServer } from "../helpers/server.js";
import { pythonOk } from "../helpers/python.js";
import { requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";

const ok = !isNbdkit && requireTools([TOOLS.nbdinfo, TOOLS.qemuImg]) && requirePythonLibnbd();
const KiB = 1024;
const MiB = 1024 * KiB;
const BS = 64 * KiB;
const SIZE = 16 * MiB;
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** Dirty block numbers from `nbdinfo --map=CONTEXT` ("offset length type description" lines). */
async function nbdinfoDirty(uri: string, context: string): Promise<number[]> {
  const r = await runOk("nbdinfo", [`--map=${context}`, uri]);
  const out: number[] = [];
  let covered = 0;
  for (const line of r.stdout.trim().split("\n")) {
    const [off, len, type, desc] = line.trim().split(/\s+/);
    expect(Number(off)).toBe(covered);
    covered += Number(len);
    expect(desc).toBe(Number(type) & 1 ? "dirty" : "clean");
    if (Number(type) & 1) for (let b = Number(off) / BS; b < (Number(off) + Number(len)) / BS; b++) out.push(b);
  }
  expect(covered).toBe(SIZE);
  return out;
}

/** The same from qemu-img map over x-dirty-bitmap (qemu reports dirty extents as "data": false). */
async function qemuDirty(sock: string, context: string): Promise<number[]> {
  const r = await runOk(TOOLS.qemuImg[0], ["map", "--output=json", "--image-opts", `driver=nbd,server.type=unix,server.path=${sock},x-dirty-bitmap=${context}`]);
  const out: number[] = [];
  for (const e of JSON.parse(r.stdout) as Array<{ start: number; length: number; data: boolean }>) {
    if (!e.data) for (let b = e.start / BS; b < (e.start + e.length) / BS; b++) out.push(b);
  }
  return out;
}

/** Blocks that [offset, offset + len) touches. */
function touched(ranges: Array<[number, number]>): number[] {
  const s = new Set<number>();
  for (const [off, len] of ranges) for (let b = Math.floor(off / BS); b <= Math.floor((off + len - 1) / BS); b++) s.add(b);
  return [...s].sort((a, b) => a - b);
}

const WRITES = String.raw`
import json
h = connect()
for (kind, off, length) in json.loads(EXTRA[0]):
    if kind == "write":
        h.pwrite(os.urandom(length), off)
    elif kind == "zero":
        h.zero(length, off)
    else:
        h.trim(length, off)
h.flush()
print("OK")
`;

// Copies the dirty extents of context EXTRA[0] into the file EXTRA[1]; prints the bytes copied.
const INCREMENTAL = String.raw`
ctx = EXTRA[0]
h = nbd.NBD()
h.add_meta_context(ctx)
h.connect_uri(URI)
assert h.can_meta_context(ctx), ctx
size = h.get_size()
runs = []
pos = 0
while pos < size:
    got = []
    def cb(c, off, entries, err):
        if c == ctx:
            p = off
            for i in range(0, len(entries), 2):
                got.append((p, entries[i], entries[i + 1]))
                p += entries[i]
        return 0
    h.block_status(min(size - pos, 1 << 30), pos, cb)
    for (off, length, flags) in got:
        if flags & 1:
            runs.append((off, length))
    pos = got[-1][0] + got[-1][1]
copied = 0
with open(EXTRA[1], "r+b") as f:
    for (off, length) in runs:
        f.seek(off)
        f.write(h.pread(length, off))
        copied += length
print(copied)
print("OK")
`;

describe.skipIf(!ok)("dirty filter: a backup scenario", () => {
  it("full copy, writes, checkpoint, incremental copy of only the dirty blocks; the bitmap survives a restart; kill -9 reads all dirty", async () => {
    const dir = makeTmpDir();
    const disk = join(dir, "disk.img");
    const backup = join(dir, "backup.img");
    const state = join(dir, "disk.dirty");
    writeFileSync(disk, randomBytes(SIZE));
    const args = ["--filter=dirty", "file", disk, `dirty-file=${state}`, "dirty-bitmap=backup", "dirty-block-size=64K"];
    let s: RunningServer = await startServer(args);
    try {
      // The full backup, taken with the server running, then checkpoint 1 marks it.
      await runOk("nbdcopy", [s.uri, backup]);
      process.kill(s.pid, "SIGUSR1");
      expect(await waitFor(() => s.stderr.includes("checkpoint 1 of export ''"))).toBe(true);

      const ops: Array<[string, number, number]> = [
        ["write", 0, 100],
        ["write", 5 * BS - 10, 20], // straddles blocks 4 and 5
        ["write", 3 * MiB, 1 * MiB], // 16 whole blocks
        ["zero", 10 * MiB + 1, 3 * BS],
        ["trim", SIZE - BS, BS], // the last block
      ];
      await pythonOk(WRITES, s.uri, [JSON.stringify(ops)]);
      const want = touched(ops.map(([, off, len]) => [off, len] as [number, number]));
      process.kill(s.pid, "SIGUSR1");
      expect(await waitFor(() => s.stderr.includes(`checkpoint 2 of export '': ${want.length} of ${SIZE / BS} blocks dirty`))).toBe(true);

      // Both clients read the frozen bitmap the same: exactly the blocks written, zeroed and trimmed.
      expect(await nbdinfoDirty(s.uri, "qemu:dirty-bitmap:backup@2")).toEqual(want);
      expect(await qemuDirty(s.sock, "qemu:dirty-bitmap:backup@2")).toEqual(want);
      // The new active bitmap starts clean.
      expect(await nbdinfoDirty(s.uri, "qemu:dirty-bitmap:backup")).toEqual([]);
      const listing = await runOk("nbdinfo", ["--list", s.uri]);
      expect(listing.stdout).toContain("qemu:dirty-bitmap:backup@2");

      // The incremental copy: only the dirty blocks travel, and the backup equals the disk again.
      const inc = await pythonOk(INCREMENTAL, s.uri, ["qemu:dirty-bitmap:backup@2", backup]);
      expect(Number(inc.stdout.trim().split("\n")[0])).toBe(want.length * BS);
      expect(sha(readFileSync(backup))).toBe(sha(readFileSync(disk)));

      // A clean restart: the frozen bitmap and the (clean) active one are as they were.
      await pythonOk(WRITES, s.uri, [JSON.stringify([["write", 7 * MiB, 10]])]);
      const stopped = await s.stop();
      expect(stopped.killed).toBe(false);
      expect(JSON.parse(readFileSync(state, "utf8")).state).toBe("closed");
      s = await startServer(args);
      expect(await nbdinfoDirty(s.uri, "qemu:dirty-bitmap:backup@2")).toEqual(want);
      expect(await nbdinfoDirty(s.uri, "qemu:dirty-bitmap:backup")).toEqual([(7 * MiB) / BS]);
      expect(s.stderr).not.toContain("not closed cleanly");

      // kill -9: the next server cannot trust the active bitmap, so every block is dirty; checkpoints stay.
      await pythonOk(WRITES, s.uri, [JSON.stringify([["write", 9 * MiB, 10]])]);
      process.kill(s.pid, "SIGKILL");
      await waitFor(() => s.exited);
      await s.stop();
      s = await startServer(args);
      expect(s.stderr).toMatch(/dirty: .*disk\.dirty was not closed cleanly .*: every block reads as dirty/);
      expect(await nbdinfoDirty(s.uri, "qemu:dirty-bitmap:backup")).toEqual(Array.from({ length: SIZE / BS }, (_, i) => i));
      expect(await nbdinfoDirty(s.uri, "qemu:dirty-bitmap:backup@2")).toEqual(want);
    } finally {
      await s.stop();
    }
  }, 120_000);

  it("bitmaps of several connections are one: what one client writes, another reads as dirty; other contexts pass through", async () => {
    const s = await startServer(["--filter=dirty", "memory", "4M"]);
    try {
      await pythonOk(WRITES, s.uri, [JSON.stringify([["write", 2 * BS, 1]])]);
      const r = await runOk("nbdinfo", ["--map=qemu:dirty-bitmap:dirty", s.uri]);
      expect(r.stdout.trim().split("\n").map((l) => l.trim().split(/\s+/).slice(0, 3).join(" "))).toEqual([
        `0 ${2 * BS} 0`,
        `${2 * BS} ${BS} 1`,
        `${3 * BS} ${4 * MiB - 3 * BS} 0`,
      ]);
      // base:allocation is still the plugin's.
      const base = await runOk("nbdinfo", ["--map", s.uri]);
      expect(base.stdout).toMatch(/^\s+0\s+\d+\s+3\s+hole,zero/);
    } finally {
      await s.stop();
    }
  });

  it("bad parameters and a dirty-file that is not one stop the server with one line", async () => {
    const dir = makeTmpDir();
    const bad = await runCli(["-f", "-U", join(dir, "a.sock"), "--filter=dirty", "memory", "1M", "dirty-block-size=1000"]);
    expect([bad.code, bad.stderr.trim()]).toEqual([1, "nbdstate: error: dirty: dirty-block-size is out of range (512..2G) or not a power of 2: '1000'"]);
    const junk = join(dir, "junk");
    writeFileSync(junk, "not json");
    const r = await runCli(["-f", "-U", join(dir, "b.sock"), "--filter=dirty", "memory", "1M", `dirty-file=${junk}`]);
    expect([r.code, r.stderr.trim()]).toEqual([1, `nbdstate: error: dirty: ${junk}: not a dirty-file (not JSON)`]);
    // Another block size than the file's: refused, not misread.
    const good = join(dir, "good");
    const s = await startServer(["--filter=dirty", "memory", "1M", `dirty-file=${good}`]);
    await s.stop();
    copyFileSync(good, `${good}.copy`);
    const other = await runCli(["-f", "-U", join(dir, "c.sock"), "--filter=dirty", "memory", "1M", `dirty-file=${good}`, "dirty-block-size=4K"]);
    expect(other.code).toBe(1);
    expect(other.stderr).toContain("written with dirty-block-size=65536, not 4096");
    // A start that fails after the file was opened (the socket cannot be made) leaves it closed, not "crashed".
    const later = join(dir, "later");
    const failed = await runCli(["-f", "-U", join(dir, "missing", "s.sock"), "--filter=dirty", "memory", "1M", `dirty-file=${later}`]);
    expect(failed.code).toBe(1);
    expect(JSON.parse(readFileSync(later, "utf8")).state).toBe("closed");
  });
});

describe("dirty bitmap arithmetic", () => {
  it("marks every block a range touches, across byte boundaries, and only those", () => {
    const bm = new DirtyBitmap(100 * 512, 512);
    bm.mark(511, 2); // blocks 0, 1
    bm.mark(7 * 512, 9 * 512); // blocks 7..15: a partial byte, a whole byte
    bm.mark(99 * 512 + 3, 10_000); // the last block, cut at the end
    const dirty = Array.from({ length: 100 }, (_, b) => b).filter((b) => bm.isDirty(b));
    expect(dirty).toEqual([0, 1, 7, 8, 9, 10, 11, 12, 13, 14, 15, 99]);
    expect(bm.count()).toBe(12);
  });

  it("extents: runs cut at the request and the disk end, one with REQ_ONE", () => {
    const bm = new DirtyBitmap(10 * 1000 + 300, 1000); // a short last block
    bm.mark(2000, 2000); // blocks 2, 3
    bm.mark(10_100, 1); // block 10 (short)
    expect(bm.extents(500, 20_000, false)).toEqual([
      { length: 1500, type: 0 },
      { length: 2000, type: 1 },
      { length: 6000, type: 0 },
      { length: 300, type: 1 },
    ]);
    expect(bm.extents(2500, 100, false)).toEqual([{ length: 100, type: 1 }]);
    expect(bm.extents(0, 20_000, true)).toEqual([{ length: 2000, type: 0 }]);
  });
});
