// The ddrescue filter: a rescued image served read-only, where only what
// the GNU ddrescue mapfile marks rescued ('+') can be read; anything else
// is EIO. Differential against nbdkit's ddrescue filter, then adjacent
// rescued blocks (nbdkit refuses a read across them), bad mapfiles.
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { covered, mergeRanges, parseMapfile } from "../../src/filters/ddrescue/mapfile.js";
import { makeTmpDir, runCli, startServer } from "../helpers/server.js";
import { expectSameInfo, expectSameReplies, py, startPair, stateTools } from "./state-helpers.js";

const ok = stateTools();

const MAP = `# Mapfile. Created by GNU ddrescue version 1.27
# Command line: ddrescue /dev/sdb disk.img disk.map
# current_pos  current_status  current_pass
0x000C0000     ?               1
#      pos        size  status
0x00000000  0x00010000  +
0x00010000  0x00001000  -
0x00011000  0x0000F000  +
0x00020000  0x00020000  /
0x00040000  0x00040000  +
0x00080000  0x00020000  *
0x000A0000  0x00020000  +
0x000C0000  0x00040000  ?
`;

function setup(map = MAP): { dir: string; img: string; map: string } {
  const dir = makeTmpDir();
  const img = join(dir, "disk.img");
  writeFileSync(img, randomBytes(1024 * 1024));
  writeFileSync(join(dir, "disk.map"), map);
  return { dir, img, map: join(dir, "disk.map") };
}

describe.skipIf(!ok)("ddrescue filter: the same command line as nbdkit", () => {
  it("flags (read-only, no cache) and 300 random reads and block status give the same replies and bytes", async () => {
    const s = setup();
    const pair = await startPair(["--filter=ddrescue", "file", s.img, `ddrescue-mapfile=${s.map}`]);
    try {
      const info = await expectSameInfo(pair, {}, ["is_rotational"]);
      expect(info.is_read_only).toBe(true);
      expect(info.can_cache).toBe(false);
      await expectSameReplies(pair, 31, 300, ["--ops=read,read,read,status,oob", "--maxlen=100000"]);
    } finally {
      await pair.stop();
    }
  });
});

describe.skipIf(!ok)("ddrescue filter: what can be read", () => {
  it("reads inside rescued ranges succeed, any byte outside is EIO; writes are refused", async () => {
    const s = setup();
    const srv = await startServer(["--filter=ddrescue", "file", s.img, `ddrescue-mapfile=${s.map}`]);
    try {
      await py(
        `
h = connect()
with open(EXTRA[0], "rb") as f:
    img = f.read()
eq(h.pread(0x10000, 0), img[:0x10000])
expect_err(errno.EIO, h.pread, 2, 0xFFFF)          # one bad byte
h.pread(0xF000, 0x11000)
expect_err(errno.EIO, h.pread, 0x1000, 0x20000)    # non-scraped
expect_err(errno.EIO, h.pread, 512, 0xC0000)       # non-tried
expect_err(errno.EPERM, h.pwrite, b"x", 0)
print("OK")`,
        srv.uri,
        [s.img],
      );
    } finally {
      await srv.stop();
    }
  });

  it("a read across two adjacent rescued blocks succeeds (nbdkit 1.32 fails it with EIO)", async () => {
    const s = setup(`0x0 +\n0x0 0x8000 +\n0x8000 0x8000 +\n0x10000 0xF0000 -\n`);
    const srv = await startServer(["--filter=ddrescue", "file", s.img, `ddrescue-mapfile=${s.map}`]);
    try {
      await py(`h = connect(); eq(len(h.pread(0x1000, 0x7800)), 0x1000); expect_err(errno.EIO, h.pread, 2, 0xFFFF); print("OK")`, srv.uri);
    } finally {
      await srv.stop();
    }
  });

  it("mapfile parsing: numbers as C's %i, status line skipped, bad lines named by line number", () => {
    const r = parseMapfile("# c\n0 +\n0x10 0x10 +\n010 8 +\n100 5 -\n  \n", "m");
    expect(r).toEqual([
      { start: 16, end: 32 },
      { start: 8, end: 16 },
    ]);
    const m = mergeRanges(r);
    expect(m).toEqual([{ start: 8, end: 32 }]);
    expect(covered(m, 8, 24)).toBe(true);
    expect(covered(m, 8, 25)).toBe(false);
    expect(covered(m, 7, 1)).toBe(false);
    expect(() => parseMapfile("0 +\n0x10 0x10 X\n", "m")).toThrow(/m:2: not a ddrescue mapfile line/);
    expect(() => parseMapfile("0 +\n-16 16 +\n", "m")).toThrow(/m:2: block offset must not be negative/);
    expect(() => parseMapfile("0 +\nzz 16 +\n", "m")).toThrow(/m:2: offset is not a number/);
  });

  it("a missing or bad mapfile stops the server at startup with one line", async () => {
    const s = setup("0 +\n0x0 0x1000 + extra\nnot a line\n");
    for (const args of [[], [`ddrescue-mapfile=${join(s.dir, "nope.map")}`], [`ddrescue-mapfile=${s.map}`]]) {
      const r = await runCli(["--filter=ddrescue", "file", s.img, ...args, "--run", "true"]);
      expect(r.code, args.join(" ")).not.toBe(0);
      expect(r.stderr).toMatch(/ddrescue: /);
      expect(r.stderr.trim().split("\n").length, r.stderr).toBe(1);
    }
  });
});
