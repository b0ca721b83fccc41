// linuxdisk plugin through the CLI: the same size, flags and partition
// layout as nbdkit for the same directory; the files read back with
// debugfs from the partition; label, type and size=[+]SIZE; read-only.
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeTmpDir, removeTmpDir, runOk } from "../helpers/server.js";
import { requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";
import { copyOut, info, nbdshFails, runNbdstate, withBoth, withServer } from "./disk-helpers.js";

const ok = requireTools([TOOLS.nbdinfo, TOOLS.nbdcopy, TOOLS.nbdkit, ["sfdisk", "fdisk"], ["debugfs", "e2fsprogs"]]) && requirePythonLibnbd();

let root: string;
let src: string;
const blob = randomBytes(300_000);
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

beforeAll(() => {
  if (!ok) return;
  root = makeTmpDir("nbdstate-linuxdisk-");
  src = join(root, "src");
  mkdirSync(join(src, "sub", "deeper"), { recursive: true });
  writeFileSync(join(src, "hello.txt"), "hello, world\n");
  writeFileSync(join(src, "sub", "blob"), blob);
  writeFileSync(join(src, "sub", "deeper", "empty"), "");
  symlinkSync("hello.txt", join(src, "link"));
});
afterAll(() => root && removeTmpDir(root));

interface SfPart { start: number; size: number; type: string; attrs?: string }
async function partitions(disk: string): Promise<{ label: string; partitions: SfPart[] }> {
  return (JSON.parse((await runOk("sfdisk", ["--json", disk])).stdout) as { partitiontable: { label: string; partitions: SfPart[] } }).partitiontable;
}

/** Copy the export out, and partition 1 of it into its own file. */
async function extract(uri: string): Promise<{ disk: string; fs: string; parts: SfPart[] }> {
  const bytes = await copyOut(uri, root);
  const disk = join(root, `disk-${randomBytes(4).toString("hex")}`);
  writeFileSync(disk, bytes);
  const t = await partitions(disk);
  expect(t.label).toBe("gpt");
  const p = t.partitions[0]!;
  const fs = `${disk}.p1`;
  writeFileSync(fs, bytes.subarray(p.start * 512, (p.start + p.size) * 512));
  return { disk, fs, parts: t.partitions };
}

const debugfs = async (fs: string, cmd: string) => (await runOk("debugfs", ["-R", cmd, fs], { timeoutMs: 30_000 })).stdout;

describe.skipIf(!ok)("linuxdisk plugin", () => {
  it("has nbdkit's size, flags and layout; files read back with debugfs", async () => {
    await withBoth(["linuxdisk", src, "label=ROOTFS", "type=ext4"], async (ours, theirs) => {
      const [a, b] = await Promise.all([info(ours.uri), info(theirs.uri)]);
      expect(a).toEqual(b);
      expect(a).toMatchObject({ is_read_only: true, can_multi_conn: true, can_cache: true });
      const [mine, ref] = await Promise.all([extract(ours.uri), extract(theirs.uri)]);
      const shape = (ps: SfPart[]) => ps.map(({ start, size, attrs }) => ({ start, size, attrs }));
      expect(shape(mine.parts)).toEqual(shape(ref.parts));
      expect(mine.parts).toHaveLength(1);
      // nbdkit 1.32.5 copies the *text* of the Linux filesystem GUID into the type field.
      expect(mine.parts[0]!.type).toBe("0FC63DAF-8483-4772-8E79-3D69D8477DE4");
      expect(ref.parts[0]!.type).toBe("36434630-4433-4641-2D38-3438332D3437");

      expect(await debugfs(mine.fs, "cat /hello.txt")).toBe("hello, world\n");
      const out = join(root, "blob.out");
      await runOk("debugfs", ["-R", `dump /sub/blob ${out}`, mine.fs]);
      expect(sha(readFileSync(out))).toBe(sha(blob));
      expect(await debugfs(mine.fs, "stat /link")).toMatch(/Fast link dest: "hello\.txt"/);
      expect(await debugfs(mine.fs, "ls -p /sub/deeper")).toMatch(/^\/\d+\/100644\/\d+\/\d+\/empty\/0\/$/m);
      const sb = (await runOk("dumpe2fs", ["-h", mine.fs])).stdout;
      expect(sb).toMatch(/Filesystem volume name:\s+ROOTFS/);
      expect(sb).toMatch(/Filesystem features:.*has_journal.*extent/);
    });
  });

  it("size=+SIZE leaves at least SIZE free; size=SIZE is the filesystem size; default type ext2", async () => {
    await withServer(["linuxdisk", src, "size=+8M"], async (s) => {
      const { fs } = await extract(s.uri);
      const sb = (await runOk("dumpe2fs", ["-h", fs])).stdout;
      const free = Number(/Free blocks:\s+(\d+)/.exec(sb)![1]) * Number(/Block size:\s+(\d+)/.exec(sb)![1]);
      expect(free).toBeGreaterThanOrEqual(8 << 20);
      expect(sb).not.toMatch(/has_journal/);
    });
    await withServer(["linuxdisk", `dir=${src}`, "size=20M", "type=ext3"], async (s) => {
      const { parts, fs } = await extract(s.uri);
      expect(parts[0]!.size * 512).toBe(20 << 20);
      expect((await runOk("dumpe2fs", ["-h", fs])).stdout).toMatch(/has_journal/);
      expect(await nbdshFails(s.uri, "h.pwrite(b'x', 0)")).toMatch(/read-only|EPERM|not permitted/i);
    });
  });

  it("refuses bad command lines and a filesystem that does not fit with one clear line", async () => {
    const cases: [string[], RegExp][] = [
      [["linuxdisk"], /linuxdisk: you must supply the dir=<DIRECTORY> parameter/],
      [["linuxdisk", join(root, "missing")], /linuxdisk: dir: .*missing: ENOENT/],
      [["linuxdisk", src, "type=xfs"], /linuxdisk: type=xfs: must be ext2, ext3 or ext4/],
      [["linuxdisk", src, src], /linuxdisk: dir=<DIRECTORY> must only be set once/],
      [["linuxdisk", src, "size=100K"], /linuxdisk: mke2fs exited with code 1: /],
      [["linuxdisk", src, "colour=red"], /linuxdisk: unknown parameter 'colour'/],
    ];
    const results = await Promise.all(cases.map(([args]) => runNbdstate(["-f", "-U", join(root, "never.sock"), ...args])));
    results.forEach((r, i) => {
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(cases[i]![1]);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
    });
  });
});
