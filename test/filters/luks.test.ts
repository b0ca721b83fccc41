// The luks filter with LUKSv1 images made by qemu-img (aes-256-xts-plain64,
// aes-128-cbc-essiv:sha256 with sha1) and by cryptsetup luksFormat --type
// luks1 on a plain file (no root or device mapper needed for that): data
// written through nbdstate is read back by nbdkit's luks filter and by
// qemu-img's luks driver, and data written by them is read by nbdstate.
import { randomBytes } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openClient } from "../../src/client/index.js";
import { isNbdkit, makeTmpDir, removeTmpDir, run, runCli, runOk, startServer } from "../helpers/server.js";
import { requireTools, TOOLS } from "../helpers/tools.js";
import { exportFlags, fuzzServe, mutants, testDisk } from "./decode-helpers.js";
import { copyOut, insideTools, openError, sha } from "./inside-helpers.js";

const ok = insideTools() && requireTools([TOOLS.qemuImg, TOOLS.qemuIo, ["cryptsetup", "cryptsetup-bin"]]);
const hasNbdkit = ok && requireTools([TOOLS.nbdkit]);
let dir: string;
let pw: string;
const PAYLOAD = 4 << 20;
const disk = testDisk(PAYLOAD, 71);
const secret = () => ["--object", `secret,id=s0,file=${join(dir, "pwraw")}`]; // qemu takes the file as it is
const qemuOpts = (f: string) => `driver=luks,key-secret=s0,file.filename=${f}`;

/** The decrypted payload as qemu-img's luks driver reads it. */
async function qemuRead(file: string): Promise<Buffer> {
  const out = join(dir, `qemu-${randomBytes(4).toString("hex")}.raw`);
  await runOk("qemu-img", ["convert", ...secret(), "--image-opts", qemuOpts(file), "-O", "raw", out]);
  return readFileSync(out);
}

/**
 * qemu-img create -f luks, tried up to 5 times: qemu times PBKDF2 to pick
 * the iteration count, and on a loaded machine that once failed here.
 */
async function qemuCreate(name: string, opts: string): Promise<void> {
  for (let i = 1; ; i++) {
    const r = await run("qemu-img", ["create", "-q", "-f", "luks", ...secret(), "-o", opts, join(dir, name), String(PAYLOAD)]);
    if (r.code === 0) return;
    if (i === 5) throw new Error(`qemu-img create ${name} failed: ${r.stderr}`);
  }
}

const fresh = (name: string) => {
  const to = join(dir, `w-${randomBytes(4).toString("hex")}-${name}`);
  copyFileSync(join(dir, name), to);
  return to;
};

beforeAll(async () => {
  if (!ok) return;
  dir = makeTmpDir("nbdstate-luks-");
  pw = join(dir, "pw");
  writeFileSync(pw, "sekret\n"); // a trailing newline is dropped, as nbdkit does
  writeFileSync(join(dir, "pwraw"), "sekret"); // cryptsetup --key-file takes the file's bytes as they are
  writeFileSync(join(dir, "plain.img"), disk);
  await qemuCreate("qemu-xts.luks", "key-secret=s0,iter-time=50");
  await qemuCreate("qemu-essiv.luks", "key-secret=s0,iter-time=50,cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256,hash-alg=sha1");
  for (const [name, args] of [["cs-xts.luks", []], ["cs-essiv.luks", ["--cipher", "aes-cbc-essiv:sha256", "--key-size", "256", "--hash", "sha1"]]] as const) {
    const f = join(dir, name);
    writeFileSync(f, Buffer.alloc(PAYLOAD + (2 << 20)));
    await runOk("cryptsetup", ["luksFormat", "--type", "luks1", "--batch-mode", "--pbkdf-force-iterations", "1000", "--key-file", join(dir, "pwraw"), ...args, f]);
  }
});
afterAll(() => dir && removeTmpDir(dir));

const ALL = ["qemu-xts.luks", "qemu-essiv.luks", "cs-xts.luks", "cs-essiv.luks"];

describe.skipIf(!ok || isNbdkit)("luks filter", () => {
  /** Fresh copies of every image in a new directory (served with file dir=DIR). */
  const freshDir = () => {
    const d = join(dir, `set-${randomBytes(4).toString("hex")}`);
    mkdirSync(d);
    for (const n of ALL) copyFileSync(join(dir, n), join(d, n));
    return d;
  };

  it("every image: written through nbdstate (nbdcopy), read back by qemu-img's luks driver and by nbdstate", async () => {
    const d = freshDir();
    const srv = await startServer(["--filter=luks", "file", `dir=${d}`, `passphrase=+${pw}`]);
    try {
      for (const name of ALL) {
        await runOk("nbdcopy", [join(dir, "plain.img"), srv.uriFor(name)]);
        expect(sha(await copyOut(srv, name)), name).toBe(sha(disk));
      }
    } finally {
      await srv.stop();
    }
    for (const name of ALL) expect(sha((await qemuRead(join(d, name))).subarray(0, PAYLOAD)), name).toBe(sha(disk));
  });

  it("every image: written by qemu-io (luks driver), read by nbdstate", async () => {
    const d = freshDir();
    for (const name of ALL) {
      await runOk("qemu-io", [...secret(), "--image-opts", qemuOpts(join(d, name)), "-c", "write -P 0x5a 512 1M", "-c", "write -P 0xa5 3M 4096"]);
    }
    const srv = await startServer(["-r", "--filter=luks", "file", `dir=${d}`, `passphrase-file=${pw}`]);
    try {
      for (const name of ALL) {
        const got = await copyOut(srv, name);
        expect(got.subarray(512, 512 + (1 << 20)).equals(Buffer.alloc(1 << 20, 0x5a)), name).toBe(true);
        expect(got.subarray(3 << 20, (3 << 20) + 4096).equals(Buffer.alloc(4096, 0xa5)), name).toBe(true);
        expect(sha(got), name).toBe(sha(await qemuRead(join(d, name))));
      }
    } finally {
      await srv.stop();
    }
  });

  it("unaligned writes (read-modify-write), also two clients writing halves of one sector at once", async () => {
    const f = fresh("qemu-xts.luks");
    const srv = await startServer(["--filter=luks", "file", f, "passphrase=sekret"]);
    const want = Buffer.from(await qemuRead(f));
    try {
      const a = await openClient({ path: srv.sock });
      const b = await openClient({ path: srv.sock });
      const writes: [typeof a, number, Buffer][] = [];
      for (let i = 0; i < 20; i++) {
        writes.push([a, 10_000 + i * 512, Buffer.alloc(256, i + 1)]);
        writes.push([b, 10_000 + i * 512 + 256, Buffer.alloc(256, 0x80 + i)]);
      }
      writes.push([a, 1_000_001, randomBytes(70_000)]);
      await Promise.all(writes.map(([c, off, data]) => c.pwrite(data, off)));
      for (const [, off, data] of writes) data.copy(want, off);
      await a.flush();
      expect((await a.pread(100_000, 990_000)).equals(want.subarray(990_000, 1_090_000))).toBe(true);
      await a.disconnect();
      await b.disconnect();
      // zero: encrypted zeros are written (not a hole below)
      const c = await openClient({ path: srv.sock });
      await c.zero(5000, 2_000_100);
      want.fill(0, 2_000_100, 2_005_100);
      await c.disconnect();
    } finally {
      await srv.stop();
    }
    expect(sha(await qemuRead(f))).toBe(sha(want));
  });

  it("a wrong passphrase: a clear error for the client; the server keeps serving", async () => {
    const srv = await startServer(["--filter=luks", "file", `dir=${dir}`, "passphrase=wrong"]);
    try {
      expect(await openError(srv, "qemu-xts.luks")).toMatch(/luks: the passphrase does not open any key slot/);
      expect(await openError(srv, "plain.img")).toMatch(/luks: this disk does not contain a LUKS header/);
      expect(await openError(srv, "qemu-xts.luks")).toMatch(/passphrase does not open/);
      expect(srv.exited).toBe(false);
    } finally {
      await srv.stop();
    }
  });

  it("no passphrase, or an unreadable passphrase file: refused at startup", async () => {
    for (const p of [[], ["passphrase=+/nonexistent/pw"], ["passphrase-file=/nonexistent"]]) {
      const r = await runCli(["--filter=luks", "file", join(dir, "qemu-xts.luks"), ...p, "--run", "true"]);
      expect(r.code, p.join(" ")).not.toBe(0);
      expect(r.stderr, p.join(" ")).toMatch(/luks: .*passphrase/);
    }
  });
});

describe.skipIf(!hasNbdkit || isNbdkit)("luks filter: differential against nbdkit (aes-xts-plain64)", () => {
  // nbdkit 1.32.5 handles xts-plain64 only (it refuses essiv) and crashes on a wrong passphrase.
  it.each(["qemu-xts.luks", "cs-xts.luks"])("%s: same flags; nbdstate writes, nbdkit reads; nbdkit writes, nbdstate reads", async (name) => {
    const f = fresh(name);
    const args = ["--filter=luks", "file", f, `passphrase=+${pw}`];
    const ours = await startServer(args);
    try {
      const theirs = await run("nbdkit", ["-U", "-", ...args, "--run", "nbdinfo --json $uri"]);
      expect(theirs.code, theirs.stderr).toBe(0);
      const want = JSON.parse(theirs.stdout).exports[0];
      for (const [k, v] of Object.entries(await exportFlags(ours))) expect(v, k).toEqual(want[k]);
      await runOk("nbdcopy", [join(dir, "plain.img"), ours.uri]);
    } finally {
      await ours.stop();
    }
    const back = await run("nbdkit", ["-U", "-", ...args, "--run", `nbdcopy $uri ${f}.out && /usr/bin/python3 -m nbd -u $uri -c 'h.pwrite(b"\\x42" * 65536, 65536)'`]);
    expect(back.code, back.stderr).toBe(0);
    expect(sha(readFileSync(`${f}.out`))).toBe(sha(disk));
    const srv = await startServer(["-r", ...args]);
    try {
      const want = Buffer.from(disk);
      want.fill(0x42, 65536, 131072);
      expect(sha(await copyOut(srv, ""))).toBe(sha(want));
    } finally {
      await srv.stop();
    }
  });
});

describe.skipIf(!ok || isNbdkit)("luks filter: corrupt headers", () => {
  it("40 damaged headers and key material areas: errors at open, never a crash or a hang", async () => {
    const good = readFileSync(join(dir, "cs-xts.luks")).subarray(0, 2 << 20);
    const fz = makeTmpDir("nbdstate-luksfuzz-");
    try {
      const cases = mutants(good, 40, 707, [[0, 592], [4096, 4096 + 256_000]]).map((m) => ({ ...m, data: m.data.length < 1000 ? m.data : Buffer.concat([m.data, Buffer.alloc(4096)]) }));
      // The good image, cut to its header and 4 KiB of payload, is served too and must read as qemu-img reads it.
      const o = await fuzzServe(fz, ["--filter=luks", "passphrase=sekret"], Buffer.concat([good, Buffer.alloc(4096)]), await decryptedTail(good), cases);
      expect(o.openFailed).toBeGreaterThan(15);
    } finally {
      removeTmpDir(fz);
    }
  });
});

/** What the good truncated image decrypts to (4 KiB of zero ciphertext), as qemu-img reads it. */
async function decryptedTail(good: Buffer): Promise<Buffer> {
  const f = join(dir, "tail.luks");
  writeFileSync(f, Buffer.concat([good, Buffer.alloc(4096)]));
  return qemuRead(f);
}
