// Debian's OpenSSH server (sshd) on a loopback port, run by the test as the
// current user with its own host key, sshd_config, authorized key and a
// known_hosts file recording the host key; and, for password logins (sshd
// checks passwords against the system's accounts, which a test must not
// touch), a small SFTP server built with ssh2's server side.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import ssh2 from "ssh2";
import { canConnect, freePort, makeTmpDir, removeTmpDir, runOk, sleep } from "./server.js";

export interface Sshd {
  dir: string;
  port: number;
  /** Client private key (ed25519, no passphrase), in authorized_keys. */
  identity: string;
  /** known_hosts with the server's key as [127.0.0.1]:PORT. */
  knownHosts: string;
  /** The host's public key line ("ssh-ed25519 AAAA..."). */
  hostKeyPub: string;
  readonly log: string;
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
process.on("exit", () => {
  for (const c of live) c.kill("SIGKILL");
});

export async function startSshd(): Promise<Sshd> {
  const dir = makeTmpDir("sshd-");
  const hostKey = join(dir, "host_ed25519");
  const identity = join(dir, "id_ed25519");
  await runOk("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "nbdstate-test-host", "-f", hostKey]);
  await runOk("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "nbdstate-test-client", "-f", identity]);
  writeFileSync(join(dir, "authorized_keys"), readFileSync(`${identity}.pub`));
  const port = await freePort();
  const hostKeyPub = readFileSync(`${hostKey}.pub`, "utf8").trim().split(" ").slice(0, 2).join(" ");
  const knownHosts = join(dir, "known_hosts");
  writeFileSync(knownHosts, `[127.0.0.1]:${port} ${hostKeyPub}\n`);
  // As root, sshd insists on its privilege separation directory (made by
  // Debian's service unit, absent in containers).
  if (process.getuid?.() === 0 && !existsSync("/run/sshd")) mkdirSync("/run/sshd", { mode: 0o755, recursive: true });
  const conf = join(dir, "sshd_config");
  writeFileSync(
    conf,
    [
      `Port ${port}`,
      "ListenAddress 127.0.0.1",
      `HostKey ${hostKey}`,
      `PidFile ${join(dir, "sshd.pid")}`,
      `AuthorizedKeysFile ${join(dir, "authorized_keys")}`,
      // The temp dir is the test's, not a home directory with ssh's modes.
      "StrictModes no",
      "UsePAM no",
      "PermitRootLogin prohibit-password",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "PubkeyAuthentication yes",
      "Subsystem sftp internal-sftp",
      "LogLevel VERBOSE",
      "MaxStartups 64",
      "MaxSessions 64",
      "",
    ].join("\n"),
  );
  const child = spawn("/usr/sbin/sshd", ["-D", "-e", "-f", conf], { stdio: ["ignore", "ignore", "pipe"] });
  live.add(child);
  let log = "";
  let exited = false;
  child.stderr!.setEncoding("utf8").on("data", (s: string) => (log += s));
  const exit = new Promise<void>((r) => child.on("exit", () => ((exited = true), live.delete(child), r())));
  const deadline = Date.now() + 10_000;
  while (!(await canConnect({ host: "127.0.0.1", port }))) {
    if (exited || Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`sshd did not start:\n${log}`);
    }
    await sleep(25);
  }
  return {
    dir,
    port,
    identity,
    knownHosts,
    hostKeyPub,
    get log() {
      return log;
    },
    async stop() {
      if (!exited) {
        child.kill("SIGTERM");
        const t = setTimeout(() => child.kill("SIGKILL"), 5000);
        await exit;
        clearTimeout(t);
      }
      removeTmpDir(dir);
    },
  };
}

export interface PasswordSftp {
  port: number;
  knownHosts: string;
  /** The one file it serves (any path opens it). */
  data: Buffer;
  readonly logins: { user: string; ok: boolean }[];
  stop(): Promise<void>;
}

/** An SFTP server (ssh2) that accepts user:password and serves one in-memory file. */
export async function startPasswordSftp(user: string, password: string, data: Buffer): Promise<PasswordSftp> {
  const { Server, utils } = ssh2;
  const { OPEN_MODE, STATUS_CODE } = utils.sftp;
  const dir = makeTmpDir("pwsftp-");
  const keys = utils.generateKeyPairSync("ed25519");
  const logins: { user: string; ok: boolean }[] = [];
  const server = new Server({ hostKeys: [keys.private] }, (client) => {
    client.on("authentication", (ctx) => {
      if (ctx.method === "password") {
        const ok = ctx.username === user && ctx.password === password;
        logins.push({ user: ctx.username, ok });
        if (ok) return ctx.accept();
      }
      ctx.reject(["password"]);
    });
    client.on("error", () => {});
    client.on("ready", () => {
      client.on("session", (accept) => {
        const session = accept();
        session.on("sftp", (acceptSftp) => {
          const sftp = acceptSftp();
          const handle = Buffer.from("h");
          sftp.on("OPEN", (id, _name, flags) => {
            if (flags & OPEN_MODE.TRUNC) data.fill(0);
            sftp.handle(id, handle);
          });
          sftp.on("READ", (id, _h, offset, length) => {
            if (offset >= data.length) return sftp.status(id, STATUS_CODE.EOF);
            sftp.data(id, data.subarray(offset, Math.min(data.length, offset + length)));
          });
          sftp.on("WRITE", (id, _h, offset, buf) => {
            buf.copy(data, offset);
            sftp.status(id, STATUS_CODE.OK);
          });
          sftp.on("FSTAT", (id) => sftp.attrs(id, { mode: 0o100600, uid: 0, gid: 0, size: data.length, atime: 0, mtime: 0 }));
          sftp.on("CLOSE", (id) => sftp.status(id, STATUS_CODE.OK));
        });
      });
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as { port: number }).port;
  const knownHosts = join(dir, "known_hosts");
  writeFileSync(knownHosts, `[127.0.0.1]:${port} ${keys.public.trim().split(" ").slice(0, 2).join(" ")}\n`);
  return {
    port,
    knownHosts,
    data,
    logins,
    async stop() {
      await new Promise<void>((r) => server.close(() => r()));
      removeTmpDir(dir);
    },
  };
}
