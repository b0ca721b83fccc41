// partitioning plugin through the CLI: MBR disks byte-identical to
// nbdkit's for the same command line (primary and logical partitions,
// mbr-id=, alignment=); GPT disks with nbdkit's structure (its GUIDs are
// random, so those are compared for shape only), read by sfdisk; each
// partition's content is its file; writes reach the files; the table is
// read-only.
import { randomBytes } from "node:crypto";
import { copyFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeTmpDir, removeTmpDir, runOk } from "../helpers/server.js";
import { requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";
import { copyToFile, info, nbdsh, nbdshFails, pyBytes, runNbdstate, withBoth, withServer } from "./disk-helpers.js";

const ok = requireTools([TOOLS.nbdinfo, TOOLS.nbdcopy, TOOLS.nbdkit, ["sfdisk", "fdisk"]]) && requirePythonLibnbd();

let root: string;
const SIZES = { a: 1_000_000, b: 3000, c: 70_000, d: 513, e: 4096, f: 2000 } as const;
const data: Record<string, Buffer> = {};
const p = (n: string) => join(root, n);

interface SfPart { node: string; start: number; size: number; type: string; uuid?: string; name?: string; attrs?: string; bootable?: boolean }
interface SfTable { label: string; id: string; firstlba?: number; lastlba?: number; partitions: SfPart[] }

async function sfdisk(file: string): Promise<SfTable> {
  const r = await runOk("sfdisk", ["--json", file]);
  const v = await runOk("sfdisk", ["--verify", file]);
  expect(v.stdout).toMatch(/No errors detected/);
  return (JSON.parse(r.stdout) as { partitiontable: SfTable }).partitiontable;
}

/** Each partition (by sfdisk's start, and the file's length) holds exactly that file. */
function expectContents(disk: Buffer, parts: SfPart[], files: string[]) {
  expect(parts.length).toBe(files.length);
  parts.forEach((part, i) => {
    const want = data[files[i]!]!;
    const got = disk.subarray(part.start * 512, part.start * 512 + want.length);
    expect(got.equals(want), `partition ${i + 1} = ${files[i]}`).toBe(true);
    expect(part.size).toBe(Math.ceil(want.length / 512));
  });
}

beforeAll(() => {
  if (!ok) return;
  root = makeTmpDir("nbdstate-part-");
  for (const [n, size] of Object.entries(SIZES)) {
    data[n] = randomBytes(size);
    writeFileSync(p(n), data[n]!);
  }
});
afterAll(() => root && removeTmpDir(root));

describe.skipIf(!ok)("partitioning plugin: MBR, byte-exact with nbdkit", () => {
  it.each([
    ["one file", ["a"], []],
    ["four primaries, mbr-id= and alignment= for the following files", ["a", "mbr-id=0x82", "alignment=4096", "b", "mbr-id=default", "alignment=512", "c", "mbr-id=12", "d"], []],
    ["six files: three primaries, an extended partition, logical 5..7", ["a", "b", "c", "d", "alignment=2048", "e", "f"], ["partition-type=mbr"]],
  ])("%s", async (_t, spec, extra) => {
    const args = ["-r", "partitioning", ...spec.map((s) => (s.includes("=") ? s : p(s))), ...extra];
    const files = spec.filter((s) => !s.includes("="));
    await withBoth(args, async (ours, theirs) => {
      const [mine, ref] = await Promise.all([copyToFile(ours.uri, root), copyToFile(theirs.uri, root)]);
      const disk = readFileSync(mine);
      expect(disk.equals(readFileSync(ref)), "same bytes as nbdkit").toBe(true);
      const t = await sfdisk(mine);
      expect(t.label).toBe("dos");
      const parts = t.partitions.filter((x) => x.type !== "f");
      expectContents(disk, parts, files);
      expect(t.partitions[0]!.bootable).toBe(true);
      const [io, it] = await Promise.all([info(ours.uri), info(theirs.uri)]);
      expect(io["export-size"]).toBe(it["export-size"]);
      expect(io).toMatchObject({ is_read_only: true, can_multi_conn: true, can_cache: true });
      expect(it).toMatchObject({ is_read_only: true, can_multi_conn: true, can_cache: true });
    });
  });

  it("alignment need not be a power of two (nbdkit 1.32.5 aborts on an assertion for alignment=1536)", async () => {
    await withServer(["-r", "partitioning", p("b"), "alignment=1536", p("d"), p("f")], async (s) => {
      const file = await copyToFile(s.uri, root);
      const t = await sfdisk(file);
      expect(t.partitions.map((x) => x.start)).toEqual([2048, 2055, 2058]);
      expectContents(readFileSync(file), t.partitions, ["b", "d", "f"]);
    });
  });

  it("types and alignment as asked (sfdisk)", async () => {
    await withServer(["-r", "partitioning", p("a"), "mbr-id=0x82", "alignment=4096", p("b"), "mbr-id=default", p("c")], async (s) => {
      const t = await sfdisk(await copyToFile(s.uri, root));
      expect(t.partitions.map((x) => [x.start, x.type])).toEqual([[2048, "83"], [4008, "82"], [4016, "83"]]);
    });
  });
});

describe.skipIf(!ok)("partitioning plugin: GPT", () => {
  const spec = ["a", "b", "type-guid=C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "c", "type-guid=default", "alignment=512", "d", "e"];
  const files = spec.filter((s) => !s.includes("="));

  it("has nbdkit's structure (same size, starts, sizes, types, attributes); GUIDs are random in both; the data between tables is identical", async () => {
    const args = ["-r", "partitioning", ...spec.map((s) => (s.includes("=") ? s : p(s))), "partition-type=gpt"];
    await withBoth(args, async (ours, theirs) => {
      const [mine, ref] = await Promise.all([copyToFile(ours.uri, root), copyToFile(theirs.uri, root)]);
      const [a, b] = [readFileSync(mine), readFileSync(ref)];
      expect(a.length).toBe(b.length);
      const [ta, tb] = [await sfdisk(mine), await sfdisk(ref)];
      expect(ta.label).toBe("gpt");
      const shape = (t: SfTable) => ({ first: t.firstlba, last: t.lastlba, parts: t.partitions.map(({ start, size, type, attrs }) => ({ start, size, type, attrs })) });
      expect(shape(ta)).toEqual(shape(tb));
      expect(ta.partitions[2]!.type).toBe("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
      expect(ta.partitions[0]!.attrs).toBe("LegacyBIOSBootable");
      // nbdstate names partitions by the file's base name; GUIDs are unique.
      expect(ta.partitions.map((x) => x.name)).toEqual(files);
      const guids = new Set(ta.partitions.map((x) => x.uuid).concat(ta.id));
      expect(guids.size).toBe(files.length + 1);
      expect(ta.id).not.toBe("00000000-0000-0000-0000-000000000000");
      expectContents(a, ta.partitions, files);
      // Everything but the two tables (LBA 0..33 and the last 33 sectors) is the same bytes.
      const tables = 34 * 512;
      const tail = 33 * 512;
      expect(a.subarray(0, 512).equals(b.subarray(0, 512)), "protective MBR").toBe(true);
      expect(a.subarray(tables, a.length - tail).equals(b.subarray(tables, b.length - tail))).toBe(true);
    });
  });

  it("more than four files pick GPT by default, as nbdkit", async () => {
    await withServer(["-r", "partitioning", ...["a", "b", "c", "d", "e"].map(p)], async (s) => {
      expect((await sfdisk(await copyToFile(s.uri, root))).label).toBe("gpt");
    });
  });
});

describe.skipIf(!ok)("partitioning plugin: writes", () => {
  it("reach the files; the table accepts only its own bytes, padding only zeros (EIO otherwise)", async () => {
    const names = ["a", "b", "c"].map((n) => {
      copyFileSync(p(n), p(`w-${n}`));
      return p(`w-${n}`);
    });
    await withServer(["partitioning", ...names, "partition-type=gpt"], async (s) => {
      const i = await info(s.uri);
      expect(i).toMatchObject({ is_read_only: false, can_flush: true, can_fua: true, can_trim: false, can_zero: true });
      const t = await sfdisk(await copyToFile(s.uri, root));
      const bStart = t.partitions[1]!.start * 512;
      const cStart = t.partitions[2]!.start * 512;
      const w = randomBytes(2000);
      await nbdsh(s.uri, `h.pwrite(${pyBytes(w)}, ${bStart + 500}); h.pwrite(b'hello', ${cStart}, nbd.CMD_FLAG_FUA); h.flush()`);
      const b = readFileSync(names[1]!);
      expect(b.length).toBe(SIZES.b);
      expect(b.subarray(500, 2500).equals(w)).toBe(true);
      expect(readFileSync(names[2]!).subarray(0, 5).toString()).toBe("hello");
      // Rewriting the table unchanged is fine; changing it is EIO.
      await nbdsh(s.uri, "h.pwrite(h.pread(1024, 0), 0)");
      expect(await nbdshFails(s.uri, "h.pwrite(b'\\xff', 1000)")).toMatch(/Input\/output error|EIO/);
      // Padding after b (3000 bytes = 5.86 sectors): zeros go, data does not.
      await nbdsh(s.uri, `h.pwrite(bytes(100), ${bStart + SIZES.b + 10}); h.zero(512, ${bStart + 8 * 512})`);
      expect(await nbdshFails(s.uri, `h.pwrite(b'x', ${bStart + SIZES.b + 10})`)).toMatch(/Input\/output error|EIO/);
    });
  });

  it("nbdinfo --map shows padding as holes, partitions and tables as data", async () => {
    await withServer(["-r", "partitioning", p("b"), p("d")], async (s) => {
      const map = JSON.parse((await runOk("nbdinfo", ["--map", "--json", s.uri])).stdout) as { offset: number; length: number; type: number }[];
      expect(map.map((e) => [e.offset, e.length, e.type])).toEqual([
        [0, 512, 0], [512, 2047 * 512, 3], [2048 * 512, 3000, 0], [2048 * 512 + 3000, 2048 * 512 - 3000, 3],
        [4096 * 512, 513, 0], [4096 * 512 + 513, 511, 3],
      ]);
    });
  });
});

describe.skipIf(!ok)("partitioning plugin: bad command lines", () => {
  it("give one clear line", async () => {
    writeFileSync(p("empty"), "");
    const cases: [string[], RegExp][] = [
      [[], /partitioning: at least one file= parameter must be supplied/],
      [[p("empty")], /partitioning: .*empty: zero length partitions are not allowed/],
      [[p("missing")], /partitioning: .*missing: cannot open: ENOENT/],
      [["alignment=1000", p("a")], /alignment 1000 must be a multiple of 512/],
      [["alignment=2M", p("a")], /alignment 2097152 must be a multiple of 512 between 512 and 1048576/],
      [["mbr-id=0x100", p("a")], /mbr-id: could not parse '0x100'/],
      [["type-guid=nope", p("a")], /type-guid: could not parse GUID 'nope'/],
      [["partition-type=bsd", p("a")], /unknown partition-type 'bsd'/],
      [["colour=red", p("a")], /partitioning: unknown parameter 'colour'/],
    ];
    const results = await Promise.all(cases.map(([args]) => runNbdstate(["-f", "-U", join(root, "never.sock"), "partitioning", ...args])));
    results.forEach((r, i) => {
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(cases[i]![1]);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
    });
  });
});
