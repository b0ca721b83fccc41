// split plugin through the CLI: the same command line under nbdkit and
// nbdstate reads the same bytes; writes, zeroes and cache requests land in
// the right file at the offset within that file (nbdkit 1.32.5 writes at
// the disk offset, growing the later file: shown here too).
import { randomBytes } from "node:crypto";
import { copyFileSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeTmpDir, removeTmpDir } from "../helpers/server.js";
import { requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";
import { copyOut, info, nbdsh, pyBytes, runNbdstate, serve, withBoth, withServer } from "./disk-helpers.js";

const ok = requireTools([TOOLS.nbdinfo, TOOLS.nbdcopy, TOOLS.nbdkit]) && requirePythonLibnbd();

let root: string;
const SIZES = { a: 1_000_000, b: 3000, empty: 0, c: 70_001 } as const;
const orig: Record<string, Buffer> = {};
const path = (n: string) => join(root, n);

/** Fresh copies of the files, named with `tag`, in command-line order. */
function copies(tag: string): string[] {
  return Object.keys(SIZES).map((n) => {
    const p = path(`${tag}-${n}`);
    copyFileSync(path(n), p);
    return p;
  });
}

beforeAll(() => {
  if (!ok) return;
  root = makeTmpDir("nbdstate-split-");
  for (const [n, size] of Object.entries(SIZES)) {
    orig[n] = randomBytes(size);
    writeFileSync(path(n), orig[n]!);
  }
});
afterAll(() => root && removeTmpDir(root));

const whole = () => Buffer.concat(Object.keys(SIZES).map((n) => orig[n]!));

describe.skipIf(!ok)("split plugin", () => {
  it("reads the same bytes and size as nbdkit (nbdcopy, and unaligned reads across file boundaries)", async () => {
    const files = Object.keys(SIZES).map(path);
    await withBoth(["-r", "split", ...files], async (ours, theirs) => {
      const [a, b] = await Promise.all([copyOut(ours.uri, root), copyOut(theirs.uri, root)]);
      expect(a.length).toBe(whole().length);
      expect(a.equals(whole())).toBe(true);
      expect(b.equals(a)).toBe(true);
      // Reads straddling a|b, b|empty|c, and the last byte.
      const code = `import hashlib\nfor off, n in [(999_990, 20), (1_002_990, 100), (${whole().length - 1}, 1), (0, 1_073_001)]:\n  print(hashlib.sha256(h.pread(n, off)).hexdigest())`;
      expect(await nbdsh(ours.uri, code)).toBe(await nbdsh(theirs.uri, code));
      const [io, it] = await Promise.all([info(ours.uri), info(theirs.uri)]);
      expect(io["export-size"]).toBe(it["export-size"]);
      expect(io.is_read_only).toBe(true);
      expect(it.is_read_only).toBe(true);
    });
  });

  it("writes land in each file at the offset within that file; file sizes never change", async () => {
    const files = copies("w");
    await withServer(["split", ...files], async (s) => {
      const i = await info(s.uri);
      expect(i).toMatchObject({ is_read_only: false, can_flush: true, can_fua: true, can_multi_conn: true, can_trim: false, can_zero: true });
      const across = randomBytes(40); // 20 bytes at the end of a, 20 at the start of b
      const inC = randomBytes(1000);
      await nbdsh(s.uri, `h.pwrite(${pyBytes(across)}, ${SIZES.a - 20}); h.pwrite(${pyBytes(inC)}, ${SIZES.a + SIZES.b + 500}, nbd.CMD_FLAG_FUA); h.flush()`);
      const [a, b, , c] = files.map((f) => readFileSync(f));
      expect(files.map((f) => statSync(f).size)).toEqual(Object.values(SIZES));
      expect(a!.subarray(SIZES.a - 20).equals(across.subarray(0, 20))).toBe(true);
      expect(b!.subarray(0, 20).equals(across.subarray(20))).toBe(true);
      expect(b!.subarray(20).equals(orig.b!.subarray(20))).toBe(true);
      expect(c!.subarray(500, 1500).equals(inC)).toBe(true);
      expect(c!.subarray(0, 500).equals(orig.c!.subarray(0, 500))).toBe(true);
      // A second connection reads back what the first wrote.
      const back = await nbdsh(s.uri, `print(h.pread(40, ${SIZES.a - 20}).hex())`);
      expect(back.trim()).toBe(across.toString("hex"));
    });
  });

  it("nbdkit 1.32.5 writes into a later file at the disk offset (its bug, which nbdstate does not have)", async () => {
    const files = copies("k");
    const s = await serve("nbdkit", ["split", ...files]);
    try {
      await nbdsh(s.uri, `h.pwrite(b'X' * 10, ${SIZES.a + 100})`); // nbdkit's split has no flush
    } finally {
      await s.stop();
    }
    // nbdkit wrote at offset 1000100 of b (3000 bytes), growing it; b[100..110) is unchanged.
    expect(statSync(files[1]!).size).toBe(SIZES.a + 110);
    expect(readFileSync(files[1]!).subarray(100, 110).equals(orig.b!.subarray(100, 110))).toBe(true);
  });

  it("write zeroes across three files (emulated by writing zeros), and cache, reach the right offsets", async () => {
    const files = copies("z");
    await withServer(["split", ...files], async (s) => {
      const start = SIZES.a - 100;
      await nbdsh(s.uri, `h.zero(${100 + SIZES.b + 100}, ${start}); h.cache(${whole().length}, 0); h.flush()`);
    });
    const [a, b, , c] = files.map((f) => readFileSync(f));
    expect(files.map((f) => statSync(f).size)).toEqual(Object.values(SIZES));
    expect(a!.subarray(SIZES.a - 100).every((x) => x === 0)).toBe(true);
    expect(a!.subarray(0, SIZES.a - 100).equals(orig.a!.subarray(0, SIZES.a - 100))).toBe(true);
    expect(b!.every((x) => x === 0)).toBe(true);
    expect(c!.subarray(0, 100).every((x) => x === 0)).toBe(true);
    expect(c!.subarray(100).equals(orig.c!.subarray(100))).toBe(true);
  });

  it("refuses bad command lines with one clear line", async () => {
    const cases: [string[], RegExp][] = [
      [["split"], /split: at least one file= parameter must be supplied/],
      [["split", path("a"), path("missing")], /split: .*missing: cannot access: ENOENT/],
      [["split", root], /split: .*: not a regular file/],
      [["split", path("a"), "size=1"], /split: unknown parameter 'size'/],
    ];
    const results = await Promise.all(cases.map(([args]) => runNbdstate(["-f", "-U", join(root, "never.sock"), ...args])));
    results.forEach((r, i) => {
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(cases[i]![1]);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
    });
  });
});
