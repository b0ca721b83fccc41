// The xz filter with files made by xz(1): single and multi-block, several
// streams with padding, every check type; random access by block from
// several clients; differential against nbdkit's xz filter; corrupt files.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openClient } from "../../src/client/index.js";
import { isNbdkit, makeTmpDir, removeTmpDir, run, runCli, runOk, startServer, type RunningServer } from "../helpers/server.js";
import { requireTools } from "../helpers/tools.js";
import { exportFlags, fuzzServe, mutants, parallelRandomReads, testDisk } from "./decode-helpers.js";
import { copyOut, insideTools, openError, sha } from "./inside-helpers.js";

const ok = insideTools([["xz", "xz-utils"]]);
const hasNbdkit = ok && requireTools([["nbdkit", "nbdkit"]]);
let dir: string;
const disk = testDisk(2 << 20, 11);
const xz = (name: string, ...args: string[]) => {
  const out = join(dir, name);
  return runOk("xz", ["-c", "-T1", ...args, join(dir, "disk.img")]).then((r) => (writeFileSync(out, r.stdoutBuf), out));
};

beforeAll(async () => {
  if (!ok) return;
  dir = makeTmpDir("nbdstate-xz-");
  writeFileSync(join(dir, "disk.img"), disk);
  await xz("one.xz");
  await xz("blocks.xz", "--block-size=256KiB");
  await runOk("sh", ["-c", `head -c 25165824 /dev/zero | xz -c -T1 --block-size=1MiB > ${join(dir, "zeros.xz")}`]);
  for (const c of ["none", "crc32", "sha256"]) await xz(`${c}.xz`, `--check=${c}`, "--block-size=1MiB");
  // Two streams with stream padding between them, as `xz --list` accepts.
  writeFileSync(join(dir, "two.xz"), Buffer.concat([readFileSync(join(dir, "blocks.xz")), Buffer.alloc(8), readFileSync(join(dir, "sha256.xz"))]));
});
afterAll(() => dir && removeTmpDir(dir));

describe.skipIf(!ok)("xz filter", () => {
  // One server for every file: file dir=DIR makes each file an export.
  let srv: RunningServer;
  beforeAll(async () => {
    srv = await startServer(["-v", "--filter=xz", "file", `dir=${dir}`]);
  });
  afterAll(() => srv?.stop());

  it("every check type, one block or many: nbdcopy gets the uncompressed bytes", async () => {
    for (const f of ["one.xz", "blocks.xz", "none.xz", "crc32.xz", "sha256.xz"]) {
      expect(sha(await copyOut(srv, f)), f).toBe(sha(disk));
    }
  });

  it.skipIf(isNbdkit)("two streams with padding: both, in order", async () => {
    expect(sha(await copyOut(srv, "two.xz"))).toBe(sha(Buffer.concat([disk, disk])));
  });

  it("random reads from 4 clients at once (multi-block file)", async () => {
    await parallelRandomReads(srv, disk, 4, 25, 7, "blocks.xz");
  });

  it.skipIf(isNbdkit)("random access: a read near the end decodes only the blocks it touches", async () => {
    // 24 MiB of zeros in 1 MiB blocks: reading its last page is fast, and
    // the index shows 24 blocks.
    const c = await openClient({ path: srv.sock, exportName: "zeros.xz" });
    const t = Date.now();
    expect((await c.pread(4096, (24 << 20) - 4096)).equals(Buffer.alloc(4096))).toBe(true);
    expect((await c.pread(100, 3 << 20)).equals(Buffer.alloc(100))).toBe(true);
    expect(Date.now() - t).toBeLessThan(2000);
    await c.disconnect();
    expect(srv.stderr).toMatch(/export 'zeros.xz': 25165824 bytes, 1 stream\(s\), 24 block\(s\)/);
  });

  it.skipIf(isNbdkit)("a file that is not xz: a clear error at open; the server goes on", async () => {
    expect(await openError(srv, "disk.img")).toMatch(/xz: not an xz file/);
    expect(sha(await copyOut(srv, "one.xz"))).toBe(sha(disk));
  });

  it.skipIf(isNbdkit)("xz-max-block refuses a file with a larger block, with a clear error", async () => {
    const small = await startServer(["--filter=xz", "file", join(dir, "one.xz"), "xz-max-block=1M"]);
    try {
      expect(await openError(small, "")).toMatch(/larger than xz-max-block \(1048576\)/);
    } finally {
      await small.stop();
    }
  });

  it("bad parameters are refused at startup", async () => {
    for (const p of ["xz-max-block=lots", "xz-max-depth=0"]) {
      const r = await runCli(["--filter=xz", "file", join(dir, "one.xz"), p, "--run", "true"]);
      expect(r.code, p).not.toBe(0);
      expect(r.stderr, p).toMatch(/xz/);
    }
  });
});

describe.skipIf(!hasNbdkit || isNbdkit)("xz filter: differential against nbdkit", () => {
  it.each(["one.xz", "blocks.xz", "sha256.xz"])("%s: same size, flags and bytes", async (f) => {
    const args = ["--filter=xz", "file", join(dir, f)];
    const ours = await startServer(args);
    const theirs = await run("nbdkit", ["-U", "-", ...args, "--run", "nbdinfo --json $uri && nbdcopy $uri $tmp/out"], {
      env: { ...process.env, tmp: dir },
    });
    try {
      expect(theirs.code, theirs.stderr).toBe(0);
      const want = JSON.parse(theirs.stdout.slice(0, theirs.stdout.lastIndexOf("}") + 1)).exports[0];
      const mine = await exportFlags(ours);
      for (const [k, v] of Object.entries(mine)) expect(v, k).toEqual(want[k]);
      expect(sha(readFileSync(join(dir, "out")))).toBe(sha(disk));
    } finally {
      await ours.stop();
    }
  });
});

describe.skipIf(!ok || isNbdkit)("xz filter: corrupt files", () => {
  it("60 seeded truncated and damaged files: errors, never a crash or a hang", async () => {
    const good = readFileSync(join(dir, "blocks.xz"));
    const fz = makeTmpDir("nbdstate-xzfuzz-");
    try {
      const o = await fuzzServe(fz, ["--filter=xz"], good, disk, mutants(good, 60, 101));
      expect(o.openFailed + o.readFailed).toBeGreaterThan(30);
    } finally {
      removeTmpDir(fz);
    }
  });
});
