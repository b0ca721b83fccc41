// The qcow2dec filter with images made by qemu-img: versions 2 and 3,
// cluster sizes from 512 bytes to 2 MiB, zlib and zstd compressed
// clusters, zero clusters (qemu-io write -z) and unallocated ones. Every
// byte is compared with `qemu-img convert -O raw`, the block status with
// `qemu-img map --output=json`; unsupported images are refused clearly;
// damaged headers and tables give errors, never a crash or a hang.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isNbdkit, makeTmpDir, removeTmpDir, runOk, startServer, type RunningServer } from "../helpers/server.js";
import { requireTools, TOOLS } from "../helpers/tools.js";
import { fuzzServe, mutants, parallelRandomReads, testDisk } from "./decode-helpers.js";
import { copyOut, insideTools, mapOf, openError, sha } from "./inside-helpers.js";

const ok = insideTools() && requireTools([TOOLS.qemuImg, TOOLS.qemuIo]);
let dir: string;
// 6 MiB with unallocated gaps: data at 0..2 MiB and 3..4.5 MiB, the rest never written.
const SIZE = 6 << 20;
const raw = Buffer.alloc(SIZE);
testDisk(2 << 20, 61).copy(raw, 0);
testDisk(1536 << 10, 62).copy(raw, 3 << 20);

const images: Record<string, string[]> = {
  "v3.qcow2": ["-O", "qcow2"],
  "v2-512.qcow2": ["-O", "qcow2", "-o", "compat=0.10,cluster_size=512"],
  "zlib.qcow2": ["-c", "-O", "qcow2"],
  "zstd-4k.qcow2": ["-c", "-O", "qcow2", "-o", "compression_type=zstd,cluster_size=4096"],
  "zlib-2m.qcow2": ["-c", "-O", "qcow2", "-o", "cluster_size=2M"],
};

type Ext = { start: number; length: number; type: number };
function merge(list: Ext[]): Ext[] {
  const out: Ext[] = [];
  for (const e of list) {
    const last = out[out.length - 1];
    if (last && last.type === e.type && last.start + last.length === e.start) last.length += e.length;
    else out.push({ ...e });
  }
  return out;
}
async function qemuMap(file: string): Promise<Ext[]> {
  const r = await runOk("qemu-img", ["map", "--output=json", "-f", "qcow2", file]);
  const j = JSON.parse(r.stdout) as { start: number; length: number; data: boolean; zero: boolean }[];
  return merge(j.map((e) => ({ start: e.start, length: e.length, type: (e.data ? 0 : 1) | (e.zero ? 2 : 0) })));
}

beforeAll(async () => {
  if (!ok) return;
  dir = makeTmpDir("nbdstate-qcow2-");
  writeFileSync(join(dir, "disk.raw"), raw);
  for (const [name, args] of Object.entries(images)) await runOk("qemu-img", ["convert", "-f", "raw", ...args, join(dir, "disk.raw"), join(dir, name)]);
  // Zero clusters: an allocated range zeroed by qemu-io (zero flag in its L2 entries).
  await runOk("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", join(dir, "disk.raw"), join(dir, "zeroed.qcow2")]);
  await runOk("qemu-io", ["-f", "qcow2", "-c", "write -z 1M 512k", join(dir, "zeroed.qcow2")]);
  await runOk("qemu-img", ["create", "-q", "-f", "qcow2", join(dir, "empty.qcow2"), "5M"]);
  // Refused: a backing file, encryption, extended L2 entries, an external data file.
  await runOk("qemu-img", ["create", "-q", "-f", "qcow2", "-b", join(dir, "v3.qcow2"), "-F", "qcow2", join(dir, "backed.qcow2")]);
  await runOk("qemu-img", ["create", "-q", "-f", "qcow2", "--object", "secret,id=s0,data=x", "-o", "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10", join(dir, "enc.qcow2"), "1M"]);
  await runOk("qemu-img", ["create", "-q", "-f", "qcow2", "-o", "extended_l2=on", join(dir, "l2.qcow2"), "1M"]);
  await runOk("qemu-img", ["create", "-q", "-f", "qcow2", "-o", `data_file=${join(dir, "data.bin")}`, join(dir, "ext.qcow2"), "1M"]);
});
afterAll(() => dir && removeTmpDir(dir));

describe.skipIf(!ok || isNbdkit)("qcow2dec filter", () => {
  let srv: RunningServer;
  beforeAll(async () => {
    srv = await startServer(["--filter=qcow2dec", "file", `dir=${dir}`]);
  });
  afterAll(() => srv?.stop());

  it("every image: the same bytes as qemu-img convert -O raw, and the same map as qemu-img map", async () => {
    for (const name of [...Object.keys(images), "zeroed.qcow2", "empty.qcow2"]) {
      const want = join(dir, `${name}.raw`);
      await runOk("qemu-img", ["convert", "-f", "qcow2", "-O", "raw", join(dir, name), want]);
      expect(sha(await copyOut(srv, name)), name).toBe(sha(readFileSync(want)));
      expect(sha(await copyOut(srv, name, false)), name).toBe(sha(readFileSync(want)));
      const ours = merge((await mapOf(srv, name)).map((e) => ({ start: e.offset, length: e.length, type: e.type })));
      expect(ours, name).toEqual(await qemuMap(join(dir, name)));
    }
  });

  it("the zeroed range reads as zeros and is a hole; qemu-img reads the export the same", async () => {
    const map = await mapOf(srv, "zeroed.qcow2");
    expect(map.some((e) => e.offset <= 1 << 20 && e.offset + e.length >= (1 << 20) + (512 << 10) && e.type === 3)).toBe(true);
    const out = join(dir, "via-nbd.raw");
    await runOk("qemu-img", ["convert", "-f", "raw", "-O", "raw", srv.uriFor("zlib.qcow2"), out]);
    expect(sha(readFileSync(out))).toBe(sha(raw));
  });

  it("random reads from 4 clients at once (compressed clusters)", async () => {
    await parallelRandomReads(srv, raw, 4, 25, 19, "zstd-4k.qcow2");
    await parallelRandomReads(srv, raw, 2, 15, 23, "v2-512.qcow2");
  });

  it.each([
    ["backed.qcow2", /has a backing file .*v3\.qcow2/],
    ["enc.qcow2", /encrypted \(LUKS\)/],
    ["l2.qcow2", /incompatible features .*extended L2 entries/],
    ["ext.qcow2", /incompatible features .*external data file/],
    ["disk.raw", /not a qcow2 image/],
  ])("%s is refused with a clear error", async (name, why) => {
    expect(await openError(srv, name)).toMatch(why);
  });
});

describe.skipIf(!ok || isNbdkit)("qcow2dec filter: corrupt images", () => {
  it("60 images with damaged headers and tables: errors, never a crash or a hang", async () => {
    const good = readFileSync(join(dir, "zlib.qcow2"));
    const l1 = Number(good.readBigUInt64BE(40));
    const l2 = Number(good.readBigUInt64BE(l1) & 0x00fffffffffffe00n);
    const fz = makeTmpDir("nbdstate-qcowfuzz-");
    try {
      const cases = mutants(good, 60, 606, [[0, 112], [l1, l1 + 64], [l2, l2 + 1024]]);
      const o = await fuzzServe(fz, ["--filter=qcow2dec"], good, raw, cases);
      expect(o.openFailed + o.readFailed).toBeGreaterThan(15);
    } finally {
      removeTmpDir(fz);
    }
  });
});
