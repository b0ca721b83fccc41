// nbdcopy (libnbd-bin): bulk data integrity through the server. A random
// 64 MiB file copied into `memory size=64M` and back is byte-identical
// (sha256), with and without --flush; the pattern plugin's content is
// exactly "each 8-byte big-endian word holds its own offset".
import { createHash, randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { patternBuffer } from "../helpers/pattern.js";
import { requireTools, TOOLS } from "../helpers/tools.js";
import { makeTmpDir, removeTmpDir, runOk, startServer, SERVER_NAME } from "../helpers/server.js";

const ok = requireTools([TOOLS.nbdcopy]);

const MiB = 1 << 20;
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

describe.skipIf(!ok)(`nbdcopy against ${SERVER_NAME}`, () => {
  let dir: string;
  let src: string;
  let srcHash: string;
  beforeAll(() => {
    dir = makeTmpDir("nbdcopy-");
    src = join(dir, "random.img");
    const data = randomBytes(64 * MiB);
    // A few zero runs too, so nbdcopy's sparse-detection paths (zero
    // requests) are exercised alongside plain writes.
    data.fill(0, 8 * MiB, 12 * MiB);
    data.fill(0, 63 * MiB, 64 * MiB);
    writeFileSync(src, data);
    srcHash = sha256(data);
  });
  afterAll(() => {
    if (dir) removeTmpDir(dir);
  });

  for (const flush of [false, true]) {
    it(`round trip of 64 MiB of random data into memory size=64M and back${flush ? " (--flush)" : ""}`, async () => {
      const srv = await startServer(["memory", "size=64M"]);
      try {
        const extra = flush ? ["--flush"] : [];
        await runOk("nbdcopy", [...extra, src, srv.uri], { timeoutMs: 60_000 });
        const back = join(dir, `back-${flush}.img`);
        await runOk("nbdcopy", [...extra, srv.uri, back], { timeoutMs: 60_000 });
        const got = readFileSync(back);
        expect(got.length).toBe(64 * MiB);
        expect(sha256(got)).toBe(srcHash);
      } finally {
        await srv.stop();
      }
    });
  }

  it("several connections at once (nbdcopy --connections=4 --requests=16) copy intact", async () => {
    const srv = await startServer(["memory", "size=64M"]);
    try {
      await runOk("nbdcopy", ["--connections=4", "--requests=16", src, srv.uri], { timeoutMs: 60_000 });
      const back = join(dir, "back-multi.img");
      await runOk("nbdcopy", ["--connections=4", srv.uri, back], { timeoutMs: 60_000 });
      expect(sha256(readFileSync(back))).toBe(srcHash);
    } finally {
      await srv.stop();
    }
  });

  it("pattern plugin: each 8-byte big-endian word holds its own offset", async () => {
    const size = 3 * MiB + 4096;
    const srv = await startServer(["pattern", `size=${size}`]);
    try {
      const out = await runOk("nbdcopy", [srv.uri, "-"], { timeoutMs: 30_000 });
      expect(out.stdoutBuf.length).toBe(size);
      const expected = patternBuffer(0, size);
      expect(out.stdoutBuf.equals(expected)).toBe(true);
      // Spot check the definition itself.
      expect(out.stdoutBuf.readBigUInt64BE(2 * MiB)).toBe(BigInt(2 * MiB));
      expect(out.stdoutBuf.readBigUInt64BE(size - 8)).toBe(BigInt(size - 8));
    } finally {
      await srv.stop();
    }
  });

  it("offset filter over pattern: offset=1M range=1M serves pattern bytes 1M..2M", async () => {
    const srv = await startServer(["--filter=offset", "pattern", "size=4M", "offset=1M", "range=1M"]);
    try {
      const out = await runOk("nbdcopy", [srv.uri, "-"], { timeoutMs: 30_000 });
      expect(out.stdoutBuf.length).toBe(MiB);
      expect(out.stdoutBuf.equals(patternBuffer(MiB, MiB))).toBe(true);
    } finally {
      await srv.stop();
    }
  });

  it("file plugin: nbdcopy out of file=PATH equals the file", async () => {
    const srv = await startServer(["-r", "file", `file=${src}`]);
    try {
      const back = join(dir, "back-file.img");
      await runOk("nbdcopy", [srv.uri, back], { timeoutMs: 60_000 });
      expect(sha256(readFileSync(back))).toBe(srcHash);
    } finally {
      await srv.stop();
    }
  });
});
