// QEMU's NBD client (qemu-utils) against the server: qemu-img info, convert
// into and out of the server, compare both ways (and a detected mismatch),
// and qemu-io pattern writes and verified reads, including a failed
// verification on the wrong pattern.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { requireTools, TOOLS } from "../helpers/tools.js";
import { makeTmpDir, removeTmpDir, run, runOk, startServer, SERVER_NAME, type RunningServer } from "../helpers/server.js";

const ok = requireTools([TOOLS.qemuImg, TOOLS.qemuIo]);
const MiB = 1 << 20;

describe.skipIf(!ok)(`qemu-img and qemu-io against ${SERVER_NAME}`, () => {
  let dir: string;
  beforeAll(() => {
    dir = makeTmpDir("qemu-");
  });
  afterAll(() => {
    if (dir) removeTmpDir(dir);
  });

  let srv: RunningServer;
  beforeEach(async () => {
    srv = await startServer(["memory", "size=16M"]);
  });
  afterEach(async () => {
    await srv?.stop();
  });

  it("qemu-img info sees a 16 MiB raw image", async () => {
    const r = await runOk("qemu-img", ["info", "--output=json", srv.uri]);
    const j = JSON.parse(r.stdout) as { "virtual-size": number; format: string };
    expect(j["virtual-size"]).toBe(16 * MiB);
    expect(j.format).toBe("raw");
    const text = await runOk("qemu-img", ["info", srv.uri]);
    expect(text.stdout).toMatch(/virtual size: 16 MiB \(16777216 bytes\)/);
  });

  it("qemu-img convert a local qcow2 into the server, compare both ways, convert back out", async () => {
    const qcow = join(dir, "local.qcow2");
    await runOk("qemu-img", ["create", "-q", "-f", "qcow2", qcow, "16M"]);
    await runOk("qemu-io", ["-f", "qcow2", "-c", "write -P 0x55 1M 1M", "-c", "write -P 0xaa 9M 64k", "-c", "write -P 0x01 16380k 4k", qcow]);

    await runOk("qemu-img", ["convert", "-n", "-f", "qcow2", "-O", "raw", qcow, srv.uri], { timeoutMs: 60_000 });
    const cmp1 = await run("qemu-img", ["compare", "-f", "qcow2", "-F", "raw", qcow, srv.uri]);
    expect(cmp1.code, cmp1.stdout + cmp1.stderr).toBe(0);
    expect(cmp1.stdout).toMatch(/Images are identical/);
    const cmp2 = await run("qemu-img", ["compare", "-f", "raw", "-F", "qcow2", srv.uri, qcow]);
    expect(cmp2.code, cmp2.stdout + cmp2.stderr).toBe(0);

    // Out of the server into a local raw file: the bytes qemu-io wrote.
    const raw = join(dir, "back.raw");
    await runOk("qemu-img", ["convert", "-f", "raw", "-O", "raw", srv.uri, raw], { timeoutMs: 60_000 });
    const img = readFileSync(raw);
    expect(img.length).toBe(16 * MiB);
    const expected = Buffer.alloc(16 * MiB);
    expected.fill(0x55, 1 * MiB, 2 * MiB);
    expected.fill(0xaa, 9 * MiB, 9 * MiB + 65536);
    expected.fill(0x01, 16380 * 1024, 16 * MiB);
    const h = (b: Buffer) => createHash("sha256").update(b).digest("hex");
    expect(h(img)).toBe(h(expected));
    const cmp3 = await run("qemu-img", ["compare", "-f", "raw", "-F", "raw", raw, srv.uri]);
    expect(cmp3.code, cmp3.stdout + cmp3.stderr).toBe(0);

    // A change on the server is detected: compare exits 1 naming the offset.
    await runOk("qemu-io", ["-f", "raw", "-c", "write -P 0x11 1M 512", srv.uri]);
    const cmp4 = await run("qemu-img", ["compare", "-f", "qcow2", "-F", "raw", qcow, srv.uri]);
    expect(cmp4.code).toBe(1);
    expect(cmp4.stdout).toMatch(/Content mismatch at offset 1048576/);
  });

  it("qemu-img convert -O raw a local raw image into the server (sparse and data)", async () => {
    const src = join(dir, "src.raw");
    await runOk("qemu-img", ["create", "-q", "-f", "raw", src, "16M"]);
    await runOk("qemu-io", ["-f", "raw", "-c", "write -P 0x42 0 3M", "-c", "write -P 0x24 12M 100k", src]);
    await runOk("qemu-img", ["convert", "-n", "-f", "raw", "-O", "raw", src, srv.uri]);
    const cmp = await run("qemu-img", ["compare", "-f", "raw", "-F", "raw", src, srv.uri]);
    expect(cmp.code, cmp.stdout + cmp.stderr).toBe(0);
    const back = await run("qemu-img", ["compare", "-f", "raw", "-F", "raw", srv.uri, src]);
    expect(back.code, back.stdout + back.stderr).toBe(0);
  });

  it("qemu-io: pattern write then verified read; verification with the wrong pattern fails", async () => {
    const w = await runOk("qemu-io", ["-f", "raw", "-c", "write -P 0xab 0 64k", "-c", "read -P 0xab 0 64k", srv.uri]);
    expect(w.stdout).toMatch(/wrote 65536\/65536 bytes at offset 0/);
    expect(w.stdout).toMatch(/read 65536\/65536 bytes at offset 0/);
    expect(w.stdout).not.toMatch(/Pattern verification failed/);

    // A second process reads what the first wrote.
    await runOk("qemu-io", ["-f", "raw", "-c", "read -P 0xab 0 64k", "-c", "read -P 0 64k 64k", srv.uri]);

    const bad = await run("qemu-io", ["-f", "raw", "-c", "read -P 0xcd 0 64k", srv.uri]);
    expect(bad.code).not.toBe(0);
    expect(bad.stdout + bad.stderr).toMatch(/Pattern verification failed at offset 0/);
  });

  it("qemu-io: unaligned writes, write -z (zeroes), discard, flush, and aio_write with FUA", async () => {
    const r = await runOk("qemu-io", [
      "-f", "raw",
      "-c", "write -P 0x77 1000 5000",
      "-c", "read -P 0x77 1000 5000",
      "-c", "read -P 0 0 1000",
      "-c", "write -P 0x66 1M 128k",
      "-c", "write -z 1M 64k",
      "-c", "read -P 0 1M 64k",
      "-c", "read -P 0x66 1088k 64k",
      "-c", "discard 1088k 64k",
      "-c", "read -P 0 1088k 64k",
      "-c", "write -f -P 0x99 2M 4k",
      "-c", "flush",
      "-c", "read -P 0x99 2M 4k",
      srv.uri,
    ]);
    expect(r.stdout + r.stderr).not.toMatch(/failed|error/i);
  });
});
