// The ssh plugin against Debian's sshd started by the test (own host key,
// sshd_config, authorized key; the current user): images written and read
// back through nbdcopy and qemu-img and compared with the remote file byte
// for byte, the same command line under nbdkit's ssh plugin, host keys
// refused when unknown or changed (as nbdkit's verify-remote-host), and
// password logins against a small ssh2 SFTP server.
import { randomBytes } from "node:crypto";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import createSsh from "../../src/plugins/ssh/index.js";
import { checkHostKey, knownKeys } from "../../src/plugins/ssh/known-hosts.js";
import { isNbdkit, makeTmpDir, removeTmpDir, run, runOk, startServer, type RunningServer } from "../helpers/server.js";
import { startPasswordSftp, startSshd, type Sshd } from "../helpers/sshd.js";
import { PYTHON, requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";
import { startNbdkitAt } from "../helpers/upstream.js";
import { createHmac } from "node:crypto";

const MiB = 1 << 20;

async function configured(params: [string, string][]) {
  const p = createSsh();
  for (const [k, v] of params) await p.config!(k, v);
  await p.configComplete!();
  return p;
}

describe("ssh plugin: parameters and known hosts", () => {
  it("checks its parameters", async () => {
    await expect(configured([["path", "x"]])).rejects.toThrow(/host parameter is required/);
    await expect(configured([["host", "h"]])).rejects.toThrow(/path parameter is required/);
    await expect(configured([["host", "h"], ["path", "x"], ["create", "true"]])).rejects.toThrow(/create=true needs create-size=/);
    await expect(configured([["host", "h"], ["path", "x"], ["port", "70000"]])).rejects.toThrow(/not a TCP port/);
    await expect(configured([["host", "h"], ["path", "x"], ["config", "/etc/ssh/ssh_config"]])).rejects.toThrow(/not read by nbdstate/);
    await expect(configured([["host", "h"], ["path", "x"], ["identity", "/nonexistent/key"]])).rejects.toThrow(/identity: cannot read \/nonexistent\/key: ENOENT/);
    await expect(configured([["host", "h"], ["path", "x"], ["known-hosts", "/nonexistent/kh"]])).rejects.toThrow(/known-hosts: \/nonexistent\/kh: no such file/);
    await expect(configured([["host", "h"], ["path", "x"], ["create-mode", "rwx"]])).rejects.toThrow(/octal mode/);
    await expect(configured([["host", "h"], ["path", "x"], ["frob", "1"]])).rejects.toThrow(/unknown parameter 'frob'/);
    await configured([["host", "h"], ["path", "x"], ["config", ""], ["port", "ssh"], ["create", "true"], ["create-size", "1M"], ["create-mode", "0644"]]);
    expect(createSsh().magicConfigKey).toBe("path");
  });

  it("known_hosts: plain, [host]:port, hashed and wildcard names; changed, revoked and unknown keys", () => {
    const dir = makeTmpDir("kh-");
    try {
      const key = (n: number) => Buffer.concat([Buffer.from([0, 0, 0, 11]), Buffer.from("ssh-ed25519"), Buffer.from([0, 0, 0, 32]), Buffer.alloc(32, n)]);
      const b64 = (n: number) => key(n).toString("base64");
      const salt = Buffer.alloc(20, 9);
      const hashed = `|1|${salt.toString("base64")}|${createHmac("sha1", salt).update("[secret.lab]:2222").digest("base64")}`;
      const f = join(dir, "known_hosts");
      writeFileSync(f, [
        `# comment`,
        `a.lab,10.0.0.1 ssh-ed25519 ${b64(1)}`,
        `[a.lab]:2222 ssh-ed25519 ${b64(2)}`,
        `${hashed} ssh-ed25519 ${b64(3)}`,
        `*.wild,!bad.wild ssh-ed25519 ${b64(4)}`,
        `@revoked * ssh-ed25519 ${b64(5)}`,
        `@cert-authority *.lab ssh-ed25519 ${b64(6)}`,
        "",
      ].join("\n"));
      const ok = (host: string, port: number, n: number) => checkHostKey(knownKeys([f], host, port), key(n), host, [f]);
      expect(ok("a.lab", 22, 1)).toEqual({ ok: true });
      expect(ok("10.0.0.1", 22, 1)).toEqual({ ok: true });
      expect(ok("a.lab", 2222, 2)).toEqual({ ok: true });
      expect(ok("a.lab", 2222, 1)).toMatchObject({ ok: false, reason: expect.stringMatching(/CHANGED/) });
      expect(ok("secret.lab", 2222, 3)).toEqual({ ok: true });
      expect(ok("x.wild", 22, 4)).toEqual({ ok: true });
      expect(ok("bad.wild", 22, 4)).toMatchObject({ ok: false, reason: expect.stringMatching(/not a known host/) });
      expect(ok("x.wild", 22, 5)).toMatchObject({ ok: false, reason: expect.stringMatching(/@revoked/) });
      expect(ok("other.lab", 22, 6)).toMatchObject({ ok: false, reason: expect.stringMatching(/not a known host/) });
    } finally {
      removeTmpDir(dir);
    }
  });
});

const tools = requireTools([TOOLS.nbdcopy, TOOLS.nbdinfo, TOOLS.qemuImg, TOOLS.nbdkit, ["/usr/sbin/sshd", "openssh-server"], ["ssh-keygen", "openssh-client"]]);
const python = requirePythonLibnbd();

describe.skipIf(isNbdkit || !tools || !python)("ssh plugin against sshd", () => {
  let sshd: Sshd;
  let dir: string;
  let image: Buffer;
  const servers: { stop(): Promise<unknown> }[] = [];
  beforeAll(async () => {
    sshd = await startSshd();
    dir = makeTmpDir("sshplug-");
    image = randomBytes(4 * MiB);
    image.fill(0, MiB, 2 * MiB);
    writeFileSync(join(dir, "image.raw"), image);
  });
  afterAll(async () => {
    for (const s of servers.reverse()) await s.stop().catch(() => {});
    await sshd?.stop();
    if (dir) removeTmpDir(dir);
  });
  const params = (path: string, extra: string[] = []) => [
    "host=127.0.0.1", `port=${sshd.port}`, `identity=${sshd.identity}`, `known-hosts=${sshd.knownHosts}`, `path=${path}`, ...extra,
  ];
  async function serve(args: string[], opts: string[] = []): Promise<RunningServer> {
    const s = await startServer([...opts, "ssh", ...args]);
    servers.push(s);
    return s;
  }
  let n = 0;
  async function nbdkitSsh(args: string[]): Promise<string> {
    const u = await startNbdkitAt(join(dir, `kit${n++}.sock`), ["ssh", ...args]);
    servers.push(u);
    return `nbd+unix:///?socket=${u.sock}`;
  }

  it("nbdcopy writes an image to the remote file and reads it back; qemu-img agrees; the remote file holds every byte", async () => {
    const remote = join(dir, "remote.img");
    writeFileSync(remote, Buffer.alloc(4 * MiB));
    const s = await serve(params(remote));
    await runOk("nbdcopy", ["--flush", join(dir, "image.raw"), s.uri], { timeoutMs: 60_000 });
    expect(readFileSync(remote).equals(image)).toBe(true);
    const back = join(dir, "back.raw");
    await runOk("nbdcopy", ["--connections=4", s.uri, back], { timeoutMs: 60_000 });
    expect(readFileSync(back).equals(image)).toBe(true);
    const q = join(dir, "qemu.raw");
    await runOk("qemu-img", ["convert", "-f", "raw", "-O", "raw", s.uri, q], { timeoutMs: 60_000 });
    expect(readFileSync(q).equals(image)).toBe(true);
  });

  it("differential: nbdkit's ssh plugin with the same command line sees the same size and bytes; and the same flags", async () => {
    const remote = join(dir, "shared.img");
    writeFileSync(remote, image);
    const ours = await serve(params(remote));
    const kit = await nbdkitSsh(params(remote));
    const flags = async (uri: string) => {
      const e = JSON.parse((await runOk("nbdinfo", ["--json", uri])).stdout).exports[0];
      return Object.fromEntries(["export-size", "is_read_only", "can_flush", "can_fua", "can_multi_conn", "can_trim", "can_zero", "can_cache", "is_rotational"].map((k) => [k, e[k]]));
    };
    const theirs = await flags(kit);
    expect(theirs.can_multi_conn).toBe(true);
    expect(await flags(ours.uri)).toEqual(theirs);
    const a = join(dir, "a.raw");
    const b = join(dir, "b.raw");
    await runOk("nbdcopy", [ours.uri, a]);
    await runOk("nbdcopy", [kit, b]);
    expect(readFileSync(a).equals(image)).toBe(true);
    expect(readFileSync(b).equals(image)).toBe(true);
    // Read-only with -r under both.
    const ro = await serve(params(remote), ["-r"]);
    expect(JSON.parse((await runOk("nbdinfo", ["--json", ro.uri])).stdout).exports[0].is_read_only).toBe(true);
  });

  it("an unknown host key is refused (as nbdkit), a changed one too; verify-remote-host=false connects anyway", async () => {
    const remote = join(dir, "hk.img");
    writeFileSync(remote, image.subarray(0, MiB));
    const empty = join(dir, "empty_known_hosts");
    writeFileSync(empty, "");
    const base = ["host=127.0.0.1", `port=${sshd.port}`, `identity=${sshd.identity}`, `path=${remote}`];
    const unknown = await serve([...base, `known-hosts=${empty}`]);
    expect((await run("nbdinfo", ["--size", unknown.uri])).code).not.toBe(0);
    expect(unknown.stderr).toMatch(/ssh: .*127\.0\.0\.1.*is not a known host/);
    const kit = await startNbdkitAt(join(dir, `kit${n++}.sock`), ["ssh", ...base, `known-hosts=${empty}`]);
    servers.push(kit);
    expect((await run("nbdinfo", ["--size", `nbd+unix:///?socket=${kit.sock}`])).code).not.toBe(0);

    const changed = join(dir, "changed_known_hosts");
    const other = join(dir, "other");
    await runOk("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", other]);
    writeFileSync(changed, `[127.0.0.1]:${sshd.port} ${readFileSync(`${other}.pub`, "utf8").split(" ").slice(0, 2).join(" ")}\n`);
    const mitm = await serve([...base, `known-hosts=${changed}`]);
    expect((await run("nbdinfo", ["--size", mitm.uri])).code).not.toBe(0);
    expect(mitm.stderr).toMatch(/CHANGED/);

    const trusting = await serve([...base, `known-hosts=${empty}`, "verify-remote-host=false"]);
    expect((await runOk("nbdinfo", ["--size", trusting.uri])).stdout.trim()).toBe(String(MiB));
  });

  it("create=true makes the remote file with create-size and create-mode on the first connection", async () => {
    const remote = join(dir, "created.img");
    const s = await serve(params(remote, ["create=true", "create-size=2M", "create-mode=0640"]));
    expect((await runOk("nbdinfo", ["--size", s.uri])).stdout.trim()).toBe(String(2 * MiB));
    const st = statSync(remote);
    expect(st.size).toBe(2 * MiB);
    expect(st.mode & 0o777).toBe(0o640);
  });

  it("writes on one connection are seen by another (multi-conn), flush is fsync", async () => {
    const remote = join(dir, "mc.img");
    writeFileSync(remote, Buffer.alloc(MiB));
    const s = await serve(params(remote));
    const script = `import sys, nbd
a = nbd.NBD(); a.connect_uri(sys.argv[1]); b = nbd.NBD(); b.connect_uri(sys.argv[1])
assert a.can_multi_conn() and a.can_flush()
a.pwrite(b"\\x5a" * 70000, 4000)
a.flush()
assert b.pread(70000, 4000) == b"\\x5a" * 70000
print("OK")`;
    expect((await runOk(PYTHON, ["-c", script, s.uri])).stdout.trim()).toBe("OK");
    expect(readFileSync(remote).subarray(4000, 74000).equals(Buffer.alloc(70000, 0x5a))).toBe(true);
  });

  it("a missing remote file fails the open with one log line", async () => {
    const s = await serve(params(join(dir, "nope.img")));
    expect((await run("nbdinfo", ["--size", s.uri])).code).not.toBe(0);
    const lines = s.stderr.split("\n").filter((l) => /nope\.img/.test(l));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/ssh: root@\[127\.0\.0\.1\]:\d+:.*nope\.img: .*(No such file|not exist)/i);
  });
});

describe.skipIf(isNbdkit || !tools)("ssh plugin: password logins", () => {
  it("password=, password=+FILE work; a wrong password is refused", async () => {
    const dir = makeTmpDir("sshpw-");
    const data = randomBytes(256 * 1024);
    const srv = await startPasswordSftp("alice", "s3cret", Buffer.from(data));
    const started: RunningServer[] = [];
    try {
      const base = ["host=127.0.0.1", `port=${srv.port}`, "user=alice", `known-hosts=${srv.knownHosts}`, "path=disk.img"];
      const a = await startServer(["ssh", ...base, "password=s3cret"]);
      started.push(a);
      const out = join(dir, "out.raw");
      await runOk("nbdcopy", [a.uri, out]);
      expect(readFileSync(out).equals(data)).toBe(true);
      const pw = join(dir, "pw");
      writeFileSync(pw, "s3cret\n");
      const b = await startServer(["ssh", ...base, `password=+${pw}`]);
      started.push(b);
      expect((await runOk("nbdinfo", ["--size", b.uri])).stdout.trim()).toBe(String(data.length));
      const c = await startServer(["ssh", ...base, "password=wrong"]);
      started.push(c);
      expect((await run("nbdinfo", ["--size", c.uri])).code).not.toBe(0);
      expect(c.stderr).toMatch(/ssh: alice@.*authentication/i);
      expect(srv.logins.some((l) => !l.ok)).toBe(true);
    } finally {
      for (const s of started) await s.stop();
      await srv.stop();
      removeTmpDir(dir);
    }
  });
});
