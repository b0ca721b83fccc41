// floppy plugin through the CLI: nbdkit's flags and partition start, a FAT
// image that mtools and fsck.fat read (files, long names, subdirectories,
// the label; symlinks skipped as nbdkit skips them), size=, bad input.
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeTmpDir, removeTmpDir, run, runOk } from "../helpers/server.js";
import { requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";
import { copyOut, info, nbdshFails, runNbdstate, withBoth, withServer } from "./disk-helpers.js";

const ok = requireTools([TOOLS.nbdinfo, TOOLS.nbdcopy, TOOLS.nbdkit, ["sfdisk", "fdisk"], ["mcopy", "mtools"], ["fsck.fat", "dosfstools"]]) && requirePythonLibnbd();

let root: string;
let src: string;
const blob = randomBytes(200_000);
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const env = { ...process.env, MTOOLS_SKIP_CHECK: "1" };

beforeAll(() => {
  if (!ok) return;
  root = makeTmpDir("nbdstate-floppy-");
  src = join(root, "src");
  mkdirSync(join(src, "Sub Dir", "deeper"), { recursive: true });
  writeFileSync(join(src, "README.TXT"), "read me\n");
  writeFileSync(join(src, "Sub Dir", "A rather long file name.data"), blob);
  writeFileSync(join(src, "Sub Dir", "deeper", "empty"), "");
  symlinkSync("README.TXT", join(src, "link"));
});
afterAll(() => root && removeTmpDir(root));

interface SfPart { start: number; size: number; type: string }
/** Copy the export out; partition 1 into its own file; the MBR's partitions. */
async function extract(uri: string): Promise<{ fs: string; parts: SfPart[]; size: number }> {
  const bytes = await copyOut(uri, root);
  const disk = join(root, `disk-${randomBytes(4).toString("hex")}`);
  writeFileSync(disk, bytes);
  const t = (JSON.parse((await runOk("sfdisk", ["--json", disk])).stdout) as { partitiontable: { label: string; partitions: SfPart[] } }).partitiontable;
  expect(t.label).toBe("dos");
  const p = t.partitions[0]!;
  writeFileSync(`${disk}.p1`, bytes.subarray(p.start * 512, (p.start + p.size) * 512));
  return { fs: `${disk}.p1`, parts: t.partitions, size: bytes.length };
}

const mcopyOut = async (fs: string, path: string) => (await runOk("mcopy", ["-n", "-i", fs, `::${path}`, "-"], { env })).stdoutBuf;

describe.skipIf(!ok)("floppy plugin", () => {
  it("has nbdkit's flags and partition start; mtools reads every file back (it cannot read nbdkit's small FAT32)", async () => {
    await withBoth(["floppy", src, "label=MY FLOPPY"], async (ours, theirs) => {
      const [a, b] = await Promise.all([info(ours.uri), info(theirs.uri)]);
      const noSize = (i: typeof a) => ({ ...i, "export-size": undefined });
      expect(noSize(a)).toEqual(noSize(b));
      expect(a).toMatchObject({ is_read_only: true, can_multi_conn: true, can_cache: true });
      const [mine, ref] = await Promise.all([extract(ours.uri), extract(theirs.uri)]);
      expect(mine.parts).toHaveLength(1);
      expect(mine.parts[0]!.start).toBe(ref.parts[0]!.start);

      expect((await mcopyOut(mine.fs, "/README.TXT")).toString()).toBe("read me\n");
      expect(sha(await mcopyOut(mine.fs, "/Sub Dir/A rather long file name.data"))).toBe(sha(blob));
      expect((await mcopyOut(mine.fs, "/Sub Dir/deeper/empty")).length).toBe(0);
      const listing = (await runOk("mdir", ["-b", "-/", "-i", mine.fs, "::/"], { env })).stdout;
      expect(listing).not.toMatch(/link/);
      expect((await runOk("minfo", ["-i", mine.fs, "::"], { env })).stdout).toMatch(/disk label="MY FLOPPY  "/);
      expect((await run("fsck.fat", ["-n", mine.fs])).code).toBe(0);
      // nbdkit makes FAT32 with far fewer clusters than FAT32 needs; mtools takes it for FAT12.
      expect((await run("mcopy", ["-n", "-i", ref.fs, "::/README.TXT", "-"], { env })).code).not.toBe(0);
    });
  });

  it("the partition type says which FAT mkfs.fat made; size= is the disk size; read-only", async () => {
    await withServer(["floppy", `dir=${src}`, "size=64M"], async (s) => {
      const { parts, size, fs } = await extract(s.uri);
      expect(size).toBe(64 << 20);
      expect(parts[0]!.start).toBe(2048);
      expect((parts[0]!.start + parts[0]!.size) * 512).toBe(64 << 20);
      const fat = (await runOk("minfo", ["-i", fs, "::"], { env })).stdout;
      expect(fat).toMatch(/disk type="FAT16/);
      expect(parts[0]!.type).toBe("e");
      expect((await runOk("minfo", ["-i", fs, "::"], { env })).stdout).toMatch(/disk label="NBDKITFLOPY"/);
      expect(await nbdshFails(s.uri, "h.pwrite(b'x', 0)")).toMatch(/read-only|EPERM|not permitted/i);
    });
  });

  it("refuses bad command lines, and files that do not fit, with one clear line", async () => {
    const cases: [string[], RegExp][] = [
      [["floppy"], /floppy: you must supply the dir=<DIRECTORY> parameter/],
      [["floppy", join(root, "missing")], /floppy: dir: .*missing: ENOENT/],
      [["floppy", src, "label=TWELVE CHARS"], /floppy: label 'TWELVE CHARS': must be 1 to 11 ASCII characters/],
      [["floppy", src, "size=1M"], /floppy: size 1048576 is too small/],
      [["floppy", src, "size=1100K"], /floppy: the files in .* do not fit in size=1126400/],
      [["floppy", src, "type=fat"], /floppy: unknown parameter 'type'/],
    ];
    const results = await Promise.all(cases.map(([args]) => runNbdstate(["-f", "-U", join(root, "never.sock"), ...args])));
    results.forEach((r, i) => {
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(cases[i]![1]);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
    });
  });
});

