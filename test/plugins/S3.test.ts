// The S3 plugin against a real S3-compatible server process: s3rver (or the
// endpoint in NBDSTATE_S3_* / AWS_* variables, see test/helpers/s3.ts).
// One object read-only; a disk of many objects written with nbdcopy and
// qemu-img, read back byte for byte, again after the S3 server restarts;
// absent objects as holes, trim/zero deleting objects, partial-object
// writes from two connections at once, credentials from parameters, the
// environment and a credentials file.
import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import createS3 from "../../src/plugins/S3/index.js";
import { s3Target, type S3Target } from "../helpers/s3.js";
import { isNbdkit, makeTmpDir, removeTmpDir, run, runOk, startServer, type RunningServer } from "../helpers/server.js";
import { PYTHON, requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";

const KiB = 1024;
const MiB = 1 << 20;

async function configured(params: [string, string][]) {
  const p = createS3();
  for (const [k, v] of params) await p.config!(k, v);
  await p.configComplete!();
  return p;
}

describe("S3 plugin: parameters", () => {
  it("needs bucket and key; size and object-size together, compatible", async () => {
    await expect(configured([["key", "k"]])).rejects.toThrow(/bucket parameter is required/);
    await expect(configured([["bucket", "b"]])).rejects.toThrow(/key parameter is required/);
    await expect(configured([["bucket", "b"], ["key", "k"], ["size", "1M"]])).rejects.toThrow(/size= and object-size= must be given together/);
    await expect(configured([["bucket", "b"], ["key", "k"], ["size", "1M"], ["object-size", "300K"]])).rejects.toThrow(/must be a multiple of object-size/);
    await expect(configured([["bucket", "b"], ["key", "k"], ["size", "1M"], ["object-size", "100"]])).rejects.toThrow(/object-size must be from 512/);
    await expect(configured([["bucket", "b"], ["key", "k"], ["access-key", "a"]])).rejects.toThrow(/must be given together/);
    await expect(configured([["bucket", "b"], ["key", "k"], ["endpoint-url", "ftp://x"]])).rejects.toThrow(/not an http\(s\) URL/);
    await expect(configured([["bucket", "b"], ["key", "k"], ["size", "1X"]])).rejects.toThrow(/size:/);
    await expect(configured([["bucket", "b"], ["key", "k"], ["secret-key", "+/nonexistent"]])).rejects.toThrow(/secret-key: cannot read it from \/nonexistent/);
    await expect(configured([["bucket", "b"], ["key", "k"], ["region", "x"]])).rejects.toThrow(/unknown parameter 'region'/);
    const p = await configured([["bucket", "b"], ["key", "k"], ["size", "1M"], ["object-size", "64K"]]);
    expect(p.name).toBe("S3");
    expect(await p.blockSize!({ size: 0 })).toEqual({ minimum: 1, preferred: 65536, maximum: 64 * MiB });
  });
});

const tools = requireTools([TOOLS.nbdcopy, TOOLS.nbdinfo, TOOLS.qemuImg]);
const python = requirePythonLibnbd();

describe.skipIf(isNbdkit || !tools || !python)("S3 plugin against an S3 server", () => {
  let s3: S3Target;
  let dir: string;
  let image: Buffer;
  const servers: RunningServer[] = [];
  const OBJ = 64 * KiB;
  const SIZE = 4 * MiB;
  beforeAll(async () => {
    dir = makeTmpDir("s3-");
    s3 = await s3Target();
    image = randomBytes(SIZE);
    image.fill(0, MiB, 2 * MiB); // 16 objects' worth of zeros: never stored
    image.fill(0, 3 * MiB + 5, 3 * MiB + 70 * KiB);
    writeFileSync(join(dir, "image.raw"), image);
  }, 60_000);
  afterAll(async () => {
    for (const s of servers) await s.stop().catch(() => {});
    await s3?.stop();
    if (dir) removeTmpDir(dir);
  });

  function base(bucket = s3.bucket): string[] {
    const b = [`bucket=${bucket}`];
    if (s3.endpoint) b.push(`endpoint-url=${s3.endpoint}`);
    return b;
  }
  function creds(): string[] {
    const c = [`access-key=${s3.accessKeyId}`, `secret-key=${s3.secretAccessKey}`];
    if (s3.sessionToken) c.push(`session-token=${s3.sessionToken}`);
    return c;
  }
  async function serve(args: string[], env?: NodeJS.ProcessEnv): Promise<RunningServer> {
    const s = await startServer(["S3", ...base(), ...args], { env });
    servers.push(s);
    return s;
  }
  async function py(script: string, uri: string): Promise<string> {
    const r = await run(PYTHON, ["-c", `import errno, sys, nbd\nURI = sys.argv[1]\n${script}\nprint("OK")`, uri], { timeoutMs: 60_000 });
    if (r.code !== 0 || !/OK\s*$/.test(r.stdout)) throw new Error(`python failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
    return r.stdout;
  }
  let n = 0;
  async function copyOut(uri: string): Promise<Buffer> {
    const out = join(dir, `out${n++}.raw`);
    await runOk("nbdcopy", ["--connections=4", uri, out], { timeoutMs: 60_000 });
    return readFileSync(out);
  }

  it("one object (key= alone): read-only, copied out byte for byte with nbdcopy and qemu-img", async () => {
    const key = `${s3.prefix}/single.img`;
    await s3.put(key, image);
    const s = await serve([`key=${key}`, ...creds()]);
    const info = JSON.parse((await runOk("nbdinfo", ["--json", s.uri])).stdout).exports[0];
    expect(info["export-size"]).toBe(SIZE);
    expect(info.is_read_only).toBe(true);
    expect(info.can_multi_conn).toBe(true);
    expect((await copyOut(s.uri)).equals(image)).toBe(true);
    const q = join(dir, "single-qemu.raw");
    await runOk("qemu-img", ["convert", "-f", "raw", "-O", "raw", s.uri, q], { timeoutMs: 60_000 });
    expect(readFileSync(q).equals(image)).toBe(true);
  });

  it("a missing object or bucket refuses the export with one log line", async () => {
    const s = await serve([`key=${s3.prefix}/nothing.img`, ...creds()]);
    expect((await run("nbdinfo", ["--size", s.uri])).code).not.toBe(0);
    expect(s.stderr.split("\n").filter((l) => /nothing\.img/.test(l))[0]).toMatch(/S3: s3:\/\/.*nothing\.img: no such object/);
    const b = await startServer(["S3", ...base("no-such-bucket-nbdstate"), `key=${s3.prefix}/d`, "size=1M", "object-size=64K", ...creds()]);
    servers.push(b);
    expect((await run("nbdinfo", ["--size", b.uri])).code).not.toBe(0);
    expect(b.stderr).toMatch(/S3: bucket no-such-bucket-nbdstate: /);
  });

  it("many objects: nbdcopy writes the disk, zeros are never stored, qemu-img and nbdcopy read it back; it survives an S3 server restart", async () => {
    const key = `${s3.prefix}/disk`;
    const args = [`key=${key}`, `size=${SIZE}`, `object-size=${OBJ}`, ...creds()];
    let s = await serve(args);
    const info = JSON.parse((await runOk("nbdinfo", ["--json", s.uri])).stdout).exports[0];
    expect(info).toMatchObject({ "export-size": SIZE, is_read_only: false, can_flush: true, can_fua: true, can_multi_conn: true, can_trim: true, can_zero: true, block_size_preferred: OBJ });
    // A new disk reads as zeros and is all hole.
    expect((await copyOut(s.uri)).equals(Buffer.alloc(SIZE))).toBe(true);
    await runOk("nbdcopy", ["--flush", join(dir, "image.raw"), s.uri], { timeoutMs: 60_000 });
    const objects = await s3.list(`${key}/`);
    // Every stored object is a whole object named KEY/%016x; the all-zero MiB is not stored.
    for (const o of objects) {
      expect(o.key).toMatch(new RegExp(`^${key}/[0-9a-f]{16}$`));
      expect(o.size).toBe(OBJ);
    }
    const stored = new Set(objects.map((o) => parseInt(o.key.slice(key.length + 1), 16)));
    for (let i = 16; i < 32; i++) expect(stored.has(i), `object ${i} (zeros)`).toBe(false);
    expect(stored.has(0)).toBe(true);
    expect((await copyOut(s.uri)).equals(image)).toBe(true);
    const q = join(dir, "multi-qemu.raw");
    await runOk("qemu-img", ["convert", "-f", "raw", "-O", "raw", s.uri, q], { timeoutMs: 60_000 });
    expect(readFileSync(q).equals(image)).toBe(true);
    // qemu-img writes a second disk; compare it with the image.
    const key2 = `${s3.prefix}/disk2`;
    const s2 = await serve([`key=${key2}`, `size=${SIZE}`, `object-size=${OBJ}`, ...creds()]);
    await runOk("qemu-img", ["convert", "-n", "-f", "raw", "-O", "raw", join(dir, "image.raw"), s2.uri], { timeoutMs: 60_000 });
    expect((await runOk("qemu-img", ["compare", "-f", "raw", "-F", "raw", join(dir, "image.raw"), s2.uri])).code).toBe(0);

    // Restart everything: nbdstate, and the S3 server (its data dir kept).
    await s.stop();
    await s3.restart();
    s = await serve(args);
    expect((await copyOut(s.uri)).equals(image)).toBe(true);
  });

  it("unaligned writes, trim and zero: objects are read-modify-written, deleted when whole or all zero; block status shows which exist", async () => {
    const key = `${s3.prefix}/edit`;
    const s = await serve([`key=${key}`, `size=1M`, `object-size=${OBJ}`, ...creds()]);
    await py(String.raw`
O = ${OBJ}
h = nbd.NBD(); h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION); h.connect_uri(URI)
def ext(count, off):
    out = []
    def cb(ctx, o, entries, err):
        p = o
        for i in range(0, len(entries), 2):
            out.append((p, entries[i], entries[i+1])); p += entries[i]
        return 0
    h.block_status(count, off, cb)
    return out
assert ext(1 << 20, 0) == [(0, 1 << 20, 3)], ext(1 << 20, 0)
# 3000 bytes across the boundary of objects 0 and 1
data = bytes((i * 7 + 1) % 251 or 1 for i in range(3000))
h.pwrite(data, O - 1000)
assert h.pread(3000, O - 1000) == data
assert h.pread(O - 1000, 0) == bytes(O - 1000)
e = ext(4 * O, 0)
assert e == [(0, 2 * O, 0), (2 * O, 2 * O, 3)], e
# a whole object, then trim it whole: gone
h.pwrite(b"\xaa" * O, 5 * O)
assert ext(O, 5 * O) == [(5 * O, O, 0)]
h.trim(O, 5 * O)
assert ext(O, 5 * O) == [(5 * O, O, 3)]
assert h.pread(O, 5 * O) == bytes(O)
# zero the 1000 written bytes of object 0: it becomes all zero and is deleted
h.zero(1000, O - 1000)
assert ext(O, 0) == [(0, O, 3)], ext(O, 0)
assert h.pread(2000, O) == data[1000:]
# zero part of object 1 with NO_HOLE: its other bytes stay
h.zero(10, O + 5, nbd.CMD_FLAG_NO_HOLE)
assert h.pread(2000, O) == data[1000:1005] + bytes(10) + data[1015:]
# fast zero of part of an object is refused; of whole objects it works
try:
    h.zero(10, O + 5, nbd.CMD_FLAG_FAST_ZERO); raise AssertionError("fast zero of part succeeded")
except nbd.Error as ex:
    assert ex.errnum == errno.ENOTSUP, ex
h.zero(O, O, nbd.CMD_FLAG_FAST_ZERO)
assert ext(2 * O, 0) == [(0, 2 * O, 3)]
h.flush()
h.shutdown()
`, s.uri);
    expect(await s3.list(`${key}/`)).toEqual([]);
  });

  it("two connections writing parts of the same objects at once lose nothing (multi-conn), and each sees the other's writes", async () => {
    const key = `${s3.prefix}/race`;
    const s = await serve([`key=${key}`, `size=1M`, `object-size=${OBJ}`, ...creds()]);
    await py(String.raw`
O = ${OBJ}
a = nbd.NBD(); a.connect_uri(URI)
b = nbd.NBD(); b.connect_uri(URI)
assert a.can_multi_conn()
# 64 pieces of 512 bytes in objects 0 and 1, interleaved between the connections, all in flight at once
cookies = []
for i in range(64):
    h = a if i % 2 == 0 else b
    buf = nbd.Buffer.from_bytearray(bytearray([i + 1]) * 512)
    cookies.append((h, h.aio_pwrite(buf, i * 2048 + (O // 2 if i >= 32 else 0))))
for h, c in cookies:
    while not h.aio_command_completed(c):
        h.poll(1)
a.flush()
for i in range(64):
    off = i * 2048 + (O // 2 if i >= 32 else 0)
    got = b.pread(512, off) if i % 2 == 0 else a.pread(512, off)
    assert got == bytes([i + 1]) * 512, (i, got[:4])
`, s.uri);
  });

  it("credentials from the environment and from a credentials file with AWS_PROFILE; wrong ones are refused at open", async () => {
    const key = `${s3.prefix}/creds.img`;
    await s3.put(key, image.subarray(0, 64 * KiB));
    const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("AWS_")));
    const fromEnv = await serve([`key=${key}`], {
      ...clean,
      AWS_ACCESS_KEY_ID: s3.accessKeyId,
      AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
      ...(s3.sessionToken ? { AWS_SESSION_TOKEN: s3.sessionToken } : {}),
    });
    expect((await copyOut(fromEnv.uri)).equals(image.subarray(0, 64 * KiB))).toBe(true);
    const file = join(dir, "credentials");
    writeFileSync(file, `[default]\naws_access_key_id = nobody\naws_secret_access_key = nothing\n\n[lab]\naws_access_key_id = ${s3.accessKeyId}\naws_secret_access_key = ${s3.secretAccessKey}\n${s3.sessionToken ? `aws_session_token = ${s3.sessionToken}\n` : ""}`);
    const fromFile = await serve([`key=${key}`], { ...clean, HOME: dir, AWS_SHARED_CREDENTIALS_FILE: file, AWS_CONFIG_FILE: join(dir, "no-config"), AWS_PROFILE: "lab" });
    expect((await copyOut(fromFile.uri)).equals(image.subarray(0, 64 * KiB))).toBe(true);
    const secret = join(dir, "secret");
    writeFileSync(secret, `${s3.secretAccessKey}\n`);
    const fromParamFile = await serve([`key=${key}`, `access-key=${s3.accessKeyId}`, `secret-key=+${secret}`]);
    expect((await copyOut(fromParamFile.uri)).equals(image.subarray(0, 64 * KiB))).toBe(true);
    // (s3rver checks the access key id but not the signature: a wrong secret
    // is only caught by a real S3. A wrong key id is caught by both.)
    const wrong = await serve([`key=${key}`, "access-key=NOT-A-KEY", `secret-key=${s3.secretAccessKey}`]);
    expect((await run("nbdinfo", ["--size", wrong.uri])).code).not.toBe(0);
    expect(wrong.stderr).toMatch(/S3: HeadObject .*creds\.img: .*403/);
    expect(wrong.stderr.trim().split("\n")).toHaveLength(1);
  });

  it("an object of the wrong size under the prefix fails reads of it with EIO and one log line", async () => {
    const key = `${s3.prefix}/bad`;
    await s3.put(`${key}/0000000000000001`, Buffer.alloc(100, 1));
    const s = await serve([`key=${key}`, `size=1M`, `object-size=${OBJ}`, ...creds()]);
    await py(String.raw`
h = nbd.NBD(); h.connect_uri(URI)
assert h.pread(512, 0) == bytes(512)
try:
    h.pread(512, ${OBJ}); raise AssertionError("read of the bad object succeeded")
except nbd.Error as ex:
    assert ex.errnum == errno.EIO, ex
`, s.uri);
    expect(s.stderr.split("\n").filter((l) => /expected object-size/.test(l))).toHaveLength(1);
  });
});
