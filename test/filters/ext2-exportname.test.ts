// ext2file=exportname with export names as NBD URIs carry them: the
// manual's own example (nbdkit-ext2-filter(1): an ext2 filesystem in
// partition 1, ext2file=exportname), with nbd://host/disks/disk.raw asking
// for the export "disks/disk.raw". Same command line under nbdkit and
// nbdstate; both must serve /disks/disk.raw.
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { makeTmpDir, NBDSTATE_BIN, run, runOk } from "../helpers/server.js";
import { requireTools, TOOLS } from "../helpers/tools.js";

const ok = requireTools([TOOLS.nbdkit, TOOLS.nbdcopy, ["mke2fs", "e2fsprogs"], ["sfdisk", "fdisk"]]);
// Under 256 KiB: nbdkit 1.32.5's ext2 filter misreads past that with nbdcopy's requests.
const raw = randomBytes(200 * 1024);
let dir = "";
let disk = "";

beforeAll(async () => {
  if (!ok) return;
  dir = makeTmpDir("nbdstate-ext2-names-");
  mkdirSync(join(dir, "src", "disks"), { recursive: true });
  writeFileSync(join(dir, "src", "disks", "disk.raw"), raw);
  const fs = join(dir, "fs.img");
  await runOk("mke2fs", ["-q", "-F", "-t", "ext2", "-d", join(dir, "src"), fs, "4M"]);
  // A disk with one MBR partition at 1 MiB holding fs.img.
  disk = join(dir, "disk.img");
  const img = Buffer.alloc(6 * 1024 * 1024);
  readFileSync(fs).copy(img, 1024 * 1024);
  writeFileSync(disk, img);
  await runOk("sfdisk", ["--no-reread", "--no-tell-kernel", "-q", disk], { input: "label: dos\nstart=2048, size=8192, type=83\n" });
});

const SERVERS = { nbdkit: ["nbdkit"], nbdstate: [process.execPath, NBDSTATE_BIN] } as const;

describe.skipIf(!ok)("ext2file=exportname: export names without the leading slash (nbdkit-ext2-filter(1)'s example)", () => {
  for (const [name, argv] of Object.entries(SERVERS)) {
    for (const exportName of ["disks/disk.raw", "/disks/disk.raw"]) {
      it(`${name}: nbd+unix:///${exportName} serves /disks/disk.raw`, async () => {
        const out = join(makeTmpDir(), "out.raw");
        // nbd+unix:///disks/disk.raw has the export name "disks/disk.raw"; //disks/... has "/disks/...".
        const uri = `nbd+unix:///${exportName}?socket=$unixsocket`;
        const r = await run(argv[0], [...argv.slice(1), "-r", "-U", "-", "--run", `nbdcopy "${uri}" ${out}`,
          "--filter=ext2", "--filter=partition", "file", disk, "partition=1", "ext2file=exportname"], { timeoutMs: 30_000 });
        expect(r.stderr).toBe("");
        expect(r.code).toBe(0);
        expect(readFileSync(out).equals(raw)).toBe(true);
      });
    }
  }

  it("nbdstate: a name of no file is refused as an unknown export (the server goes on)", async () => {
    const r = await run(process.execPath, [NBDSTATE_BIN, "-r", "-U", "-", "--run", `nbdinfo --size "nbd+unix:///disks/nope?socket=$unixsocket"`,
      "--filter=ext2", "--filter=partition", "file", disk, "partition=1", "ext2file=exportname"], { timeoutMs: 30_000 });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("server has no export named 'disks/nope'");
  });
});
