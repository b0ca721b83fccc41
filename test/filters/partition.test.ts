// The partition filter over disks partitioned by sfdisk (MBR with logical
// partitions, GPT), one partition holding an ext4 filesystem (written with
// dd); the ext2 filter stacked on top, and the cartesian listings.
import { randomBytes } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import createPartition from "../../src/filters/partition/index.js";
import { PartitionError, readTable } from "../../src/filters/partition/table.js";
import createMemory from "../../src/plugins/memory/index.js";
import { PAGE_SIZE } from "../../src/plugins/memory/sparse.js";
import { isNbdkit, makeTmpDir, removeTmpDir, runOk, startServer } from "../helpers/server.js";
import {
  bufferContext, copyOut, expectContents, expectServing, insideTools, listError, listExports, mutations, openError, sha, writeTree,
} from "./inside-helpers.js";
import { runningStack } from "../helpers/stack.js";

const ok = insideTools([["sfdisk", "fdisk"], ["mke2fs", "e2fsprogs"]]);
const S = 512;
const MBR = [
  "label: dos",
  "start=2048, size=34816, type=83",
  "start=36864, size=8192, type=83",
  "start=45056, size=40960, type=5",
  "start=47104, size=8192, type=83",
  "start=57344, size=8192, type=82",
];
const GPT = [
  "label: gpt",
  'start=2048, size=34816, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="root fs"',
  'start=36864, size=8192, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="esp"',
  "start=45056, size=8192, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
];
/** Partition number -> [start sector, sectors]. */
const MBR_PARTS: Record<string, [number, number]> = { 1: [2048, 34816], 2: [36864, 8192], 3: [45056, 40960], 5: [47104, 8192], 6: [57344, 8192] };
const GPT_PARTS: Record<string, [number, number]> = { 1: [2048, 34816], 2: [36864, 8192], 3: [45056, 8192] };
/** What is served of the MBR disk: not 3, the extended partition (a container of 5 and 6). */
const MBR_SERVED = Object.fromEntries(Object.entries(MBR_PARTS).filter(([n]) => n !== "3"));
const fsFiles: Record<string, Buffer> = { "/etc/hosts": Buffer.from("127.0.0.1 localhost\n"), "/data/blob": randomBytes(200_000) };

let root: string;
const disk = (n: string) => join(root, n);
/** The bytes of each partition of a disk file. */
const slices = (file: string, parts: Record<string, [number, number]>) =>
  Object.fromEntries(Object.entries(parts).map(([n, [s, len]]) => [n, readFileSync(file).subarray(s * S, (s + len) * S)]));

async function makeDisk(name: string, script: string[], parts: Record<string, [number, number]>) {
  const f = disk(name);
  writeFileSync(f, "");
  await runOk("truncate", ["-s", "64M", f]);
  await runOk("sfdisk", ["-q", f], { input: script.join("\n") + "\n" });
  await runOk("dd", [`if=${disk("fs.img")}`, `of=${f}`, "bs=512", "seek=2048", "conv=notrunc", "status=none"]);
  for (const [n, [s, len]] of Object.entries(parts)) {
    if (n === "1" || (n === "3" && name.startsWith("mbr"))) continue; // the filesystem; the EBR chain
    const fd = readFileSync(f);
    randomBytes(Math.min(len * S, 1 << 20)).copy(fd, s * S);
    writeFileSync(f, fd);
  }
}

beforeAll(async () => {
  if (!ok) return;
  root = makeTmpDir("nbdstate-part-");
  writeTree(join(root, "src"), Object.fromEntries(Object.entries(fsFiles).map(([k, v]) => [k.slice(1), v])));
  await runOk("mke2fs", ["-q", "-F", "-t", "ext4", "-d", join(root, "src"), disk("fs.img"), "16M"]);
  await makeDisk("mbr.img", MBR, MBR_PARTS);
  await makeDisk("gpt.img", GPT, GPT_PARTS);
});
afterAll(() => root && removeTmpDir(root));

describe.skipIf(!ok)(`partition filter: partition=N (${isNbdkit ? "nbdkit" : "nbdstate"})`, () => {
  it.each([["mbr.img", "1"], ["mbr.img", "5"], ["mbr.img", "6"], ["gpt.img", "2"]])("%s partition=%s", async (d, n) => {
    const srv = await startServer(["-r", "--filter=partition", "file", disk(d), `partition=${n}`]);
    try {
      const want = slices(disk(d), d.startsWith("mbr") ? MBR_PARTS : GPT_PARTS)[n]!;
      expect(sha(await copyOut(srv, ""))).toBe(sha(want));
    } finally {
      await srv.stop();
    }
  });
});

describe.skipIf(!ok)(`partition filter: the MBR extended partition (${isNbdkit ? "nbdkit" : "nbdstate"})`, () => {
  it("partition=3 (the extended container of 5 and 6) is not served: the client is refused, as nbdkit", async () => {
    const srv = await startServer(["-r", "--filter=partition", "file", disk("mbr.img"), "partition=3"]);
    try {
      expect(await openError(srv, "")).toMatch(isNbdkit ? /./ : /MBR partition 3 is an extended partition/);
      expect(srv.stderr).toMatch(isNbdkit ? /MBR partition 3 not found/ : /^/);
    } finally {
      await srv.stop();
    }
  });
});

describe.skipIf(!ok || isNbdkit)("partition filter: partition=exportname", () => {
  it.each([
    ["mbr.img", MBR_SERVED, { 1: /^MBR type 0x83 \(Linux\), 17 MiB$/, 6: /^MBR logical type 0x82 \(Linux swap\), 4 MiB$/ }],
    ["gpt.img", GPT_PARTS, { 1: /^GPT type 0FC63DAF-8483-4772-8E79-3D69D8477DE4 \(Linux filesystem\), name 'root fs', 17 MiB$/, 2: /\(EFI System\), name 'esp', 4 MiB$/ }],
  ] as const)("%s: partitions listed as 1, 2, ... with type and size; contents equal", async (d, parts, descs) => {
    const srv = await startServer(["-r", "--filter=partition", "file", disk(d), "partition=exportname"]);
    try {
      const list = await listExports(srv);
      expect(list.map((e) => e.name)).toEqual(Object.keys(parts));
      for (const [n, re] of Object.entries(descs)) expect(list.find((e) => e.name === n)?.description).toMatch(re);
      await expectContents(srv, slices(disk(d), parts));
      expect(await openError(srv, "4")).toMatch(/no partition 4 in the .* table/);
      if (d === "mbr.img") expect(await openError(srv, "3")).toMatch(/MBR partition 3 is an extended partition/);
    } finally {
      await srv.stop();
    }
  });

  it("ext2 on top: `--filter=ext2 --filter=partition ... partition=exportname ext2file=exportname` lists 1:/PATH", async () => {
    const srv = await startServer(["-r", "--filter=ext2", "--filter=partition", "file", disk("gpt.img"), "partition=exportname", "ext2file=exportname"]);
    try {
      const want = Object.fromEntries(Object.entries(fsFiles).map(([k, v]) => [`1:${k}`, v]));
      expect((await listExports(srv)).map((e) => e.name).sort()).toEqual(Object.keys(want).sort());
      await expectContents(srv, want);
      expect(await openError(srv, "2:/etc/hosts")).toMatch(/not an ext2\/3\/4 filesystem/);
    } finally {
      await srv.stop();
    }
  });

  it("three levels: `file dir=DIR` + partition + ext2 lists DISK:N:/PATH; partition alone lists DISK:N", async () => {
    const d = join(root, "disks");
    mkdirSync(d);
    copyFileSync(disk("mbr.img"), join(d, "mbr.img"));
    copyFileSync(disk("gpt.img"), join(d, "gpt.img"));
    const both = await startServer(["-r", "--filter=ext2", "--filter=partition", "file", `dir=${d}`, "partition=exportname", "ext2file=exportname"]);
    try {
      const want: Record<string, Buffer> = {};
      for (const img of ["gpt.img", "mbr.img"]) for (const [k, v] of Object.entries(fsFiles)) want[`${img}:1:${k}`] = v;
      expect((await listExports(both)).map((e) => e.name).sort()).toEqual(Object.keys(want).sort());
      await expectContents(both, want);
    } finally {
      await both.stop();
    }
    const parts = await startServer(["-r", "--filter=partition", "file", `dir=${d}`, "partition=exportname"]);
    try {
      const names = (await listExports(parts)).map((e) => e.name);
      expect(names).toEqual([...Object.keys(GPT_PARTS).map((n) => `gpt.img:${n}`), ...Object.keys(MBR_SERVED).map((n) => `mbr.img:${n}`)]);
      await expectContents(parts, { "mbr.img:5": slices(disk("mbr.img"), MBR_PARTS)["5"]! });
    } finally {
      await parts.stop();
    }
  });
});

describe.skipIf(!ok || isNbdkit)("partition filter: corrupt tables", () => {
  /** A copy of a disk with `edit` applied. */
  const variant = (from: string, edit: (b: Buffer) => void) => {
    const b = readFileSync(disk(from));
    edit(b);
    const f = disk(`bad-${randomBytes(4).toString("hex")}.img`);
    writeFileSync(f, b);
    return f;
  };
  const ebr2 = (b: Buffer) => 45056 + b.readUInt32LE(45056 * S + 462 + 8); // second EBR's sector

  it.each([
    ["no boot signature", () => variant("mbr.img", (b) => b.fill(0, 510, 512)), /no MBR boot signature/],
    ["GPT header CRC", () => variant("gpt.img", (b) => void (b[S + 40] ^= 1)), /corrupt GPT: header CRC32 mismatch/],
    ["GPT entries CRC", () => variant("gpt.img", (b) => void (b[2 * S + 60] ^= 1)), /partition entry array CRC32 mismatch/],
    ["an EBR chain that loops", () => variant("mbr.img", (b) => {
      const e = ebr2(b);
      b[e * S + 462 + 4] = 0x05;
      b.writeUInt32LE(e - 45056, e * S + 462 + 8);
    }), /chain of logical partitions loops/],
    ["an EBR outside the extended partition", () => variant("mbr.img", (b) => b.writeUInt32LE(1 << 30, 45056 * S + 462 + 8)), /outside the extended partition/],
  ])("%s: a clear error, and the server keeps serving", async (_what, make, msg) => {
    const f = make();
    const srv = await startServer(["-r", "--filter=partition", "file", f, "partition=exportname"]);
    try {
      expect(await listError(srv)).toMatch(msg);
      expect(await openError(srv, "1")).toMatch(msg);
      expect(srv.exited).toBe(false);
    } finally {
      await srv.stop();
    }
  });

  it("a partition past the end of the disk is not listed, and refused when asked for", async () => {
    const f = variant("mbr.img", (b) => b.writeUInt32LE(1 << 24, 446 + 16 + 12)); // partition 2: 8 GiB
    const srv = await startServer(["-r", "--filter=partition", "file", f, "partition=exportname"]);
    try {
      expect((await listExports(srv)).map((e) => e.name)).toEqual(["1", "5", "6"]);
      expect(await openError(srv, "2")).toMatch(/partition 2 .* runs past the end of the disk/);
      await expectServing(srv, "5", slices(f, MBR_PARTS)["5"]!);
    } finally {
      await srv.stop();
    }
  });
});

describe.skipIf(!ok)("partition filter: the table parser on damaged tables", () => {
  it("randomly damaged MBR (with EBRs) and GPT tables: a table or a PartitionError, never anything else", async () => {
    const mbr = readFileSync(disk("mbr.img")).subarray(0, 32 << 20);
    const gpt = readFileSync(disk("gpt.img")).subarray(0, 1 << 20);
    const ebr = 45056 * S;
    const cases = [mutations(mbr, 300, 4, 446, 512), mutations(mbr, 300, 4, ebr + 446, ebr + 512), mutations(gpt, 300, 6, 0, 3 * S)];
    for (const damaged of cases) {
      for (const b of damaged) {
        const t = await readTable(bufferContext(b)).catch((err) => void expect(err).toBeInstanceOf(PartitionError));
        for (const p of t?.partitions ?? []) if (!p.problem) expect(p.start + p.size).toBeLessThanOrEqual(b.length);
      }
    }
  });
});

describe("partition filter: block status is the partition's, shifted and clipped", () => {
  it("holes below inside the partition are reported at the partition's offsets", async () => {
    const stack = await runningStack(createMemory(), [createPartition()], [["size", "8M"], ["partition", "1"]]);
    const mbr = Buffer.alloc(S);
    mbr[446 + 4] = 0x83;
    mbr.writeUInt32LE(2048, 446 + 8); // 1 MiB
    mbr.writeUInt32LE(4096, 446 + 12); // 2 MiB
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    const raw = await stack.layers[1]!.asLower().open({ exportName: "" });
    await raw.pwrite(mbr, 0, 0);
    await raw.pwrite(Buffer.alloc(PAGE_SIZE, 9), (1 << 20) + PAGE_SIZE, 0); // the partition's 2nd page
    await stack.layers[1]!.asLower().close(raw);
    const o = await stack.open(true, "", false);
    try {
      expect(await o.ctx.getSize()).toBe(2 << 20);
      expect(await o.ctx.extents(2 << 20, 0, 0)).toEqual([
        { length: PAGE_SIZE, type: 3 },
        { length: PAGE_SIZE, type: 0 },
        { length: (2 << 20) - 2 * PAGE_SIZE, type: 3 },
      ]);
    } finally {
      await stack.close(o);
      await stack.unload();
    }
  });
});
