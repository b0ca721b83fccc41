// ssh plugin: a disk image on another machine, read and written over SFTP
// (nbdkit-ssh-plugin's command line), through the ssh2 package. One SSH
// connection per NBD connection; the server's host key is checked against
// known_hosts before anything is sent.

import { existsSync, readFileSync } from "node:fs";
import { homedir, hostname, userInfo } from "node:os";
import { join } from "node:path";
import ssh2, { type ConnectConfig } from "ssh2";
import { parseBool, parseSize } from "../../backend/size.js";
import { NbdError, type Plugin } from "../../backend/types.js";
import { NBD_EIO, NBD_EPERM } from "../../protocol/constants.js";
import { readSecret } from "../kit/secret.js";
import { checkHostKey, knownHostName, knownKeys } from "./known-hosts.js";
import { SshSession } from "./session.js";

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Host key algorithms to offer first for recorded key types (so the server shows the key we know). */
const ALGORITHMS_FOR: Record<string, string[]> = {
  "ssh-rsa": ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
};

export default function createPlugin(): Plugin<SshSession> {
  let host: string | undefined;
  let path: string | undefined;
  let user: string | undefined;
  let password: string | undefined;
  const identities: string[] = [];
  let knownHostsFile: string | undefined;
  let port = 22;
  let timeout: number | undefined;
  let verify = true;
  let compression = false;
  let create = false;
  let createSize: number | undefined;
  let createMode = 0o600;

  let created: Promise<void> | undefined;
  /** Keys read once at startup: [file, parsed key]. */
  let keys: { file: string; key: Buffer }[] = [];

  const localUser = () => {
    try {
      return userInfo().username;
    } catch {
      return process.env.USER ?? "root";
    }
  };

  /** libssh's %-expansions in identity= and known-hosts=. */
  function expand(p: string): string {
    return p.replace(/%(.)/g, (all, c: string) => {
      switch (c) {
        case "d": return join(homedir(), ".ssh");
        case "u": return localUser();
        case "l": return hostname();
        case "h": return host ?? "";
        case "r": return user ?? localUser();
        case "p": return String(port);
        case "%": return "%";
        default: return all;
      }
    });
  }

  function knownHostsFiles(): string[] {
    if (knownHostsFile !== undefined) return [expand(knownHostsFile)];
    return [join(homedir(), ".ssh", "known_hosts"), "/etc/ssh/ssh_known_hosts"];
  }

  function connectConfig(): ConnectConfig {
    const username = user ?? localUser();
        const auth: unknown[] = [{ type: "none", username }];
    for (const k of keys) auth.push({ type: "publickey", username, key: k.key });
    if (process.env.SSH_AUTH_SOCK) auth.push({ type: "agent", username, agent: process.env.SSH_AUTH_SOCK });
    if (password !== undefined) {
      auth.push({ type: "password", username, password });
    }
    const files = knownHostsFiles();
    const name = knownHostName(host!, port);
    const known = verify ? knownKeys(files, host!, port) : [];
    const types = [...new Set(known.filter((k) => !k.revoked).flatMap((k) => ALGORITHMS_FOR[k.type] ?? [k.type]))];
    let refusal: string | undefined;
    const cfg: ConnectConfig = {
      host,
      port,
      username,
      authHandler: auth as never,
      readyTimeout: (timeout ?? 20) * 1000,
      keepaliveInterval: 30_000,
      hostVerifier: (key: Buffer) => {
        if (!verify) return true;
        const r = checkHostKey(known, key, name, files);
        if (!r.ok) refusal = r.reason;
        return r.ok;
      },
      algorithms: {
        ...(types.length ? { serverHostKey: { prepend: types } } : {}),
        ...(compression ? { compress: ["zlib@openssh.com", "zlib", "none"] } : {}),
      } as ConnectConfig["algorithms"],
    };
    // The verifier's reason replaces ssh2's bare "Host denied (verification failed)".
    Object.defineProperty(cfg, "refusal", { get: () => refusal });
    return cfg;
  }

  function fail(e: unknown): NbdError {
    if (e instanceof NbdError) return e;
    // The server logs the failed request (one line, with the connection).
    return new NbdError(NBD_EIO, `ssh: ${message(e)}`);
  }

  return {
    name: "ssh",
    version: "1.0.0",
    longname: "nbdstate ssh plugin",
    description: "A disk image on another machine, over SSH (SFTP).",
    magicConfigKey: "path",
    configHelp:
      "host=<HOST>              (required) The SSH server.\n" +
      "[path=]<PATH>            (required) The remote file (relative: to the home directory).\n" +
      "user=<USER>              Remote user (default: the local user).\n" +
      "password=<PW>|+FILE|-|-FD  Password authentication.\n" +
      "identity=<FILE>          A private key to try first (repeatable).\n" +
      "known-hosts=<FILE>       Known hosts file (default ~/.ssh/known_hosts, /etc/ssh/ssh_known_hosts).\n" +
      "verify-remote-host=false Do not check the host key (dangerous).\n" +
      "port=<PORT>              SSH port (default 22).\n" +
      "timeout=<SECS>           Connection timeout (default 20).\n" +
      "compression=true         zlib compression.\n" +
      "create=true create-size=<SIZE> [create-mode=<MODE>]  Create (replace) the file first.",

    config(key, value) {
      const bool = (): boolean => {
        try {
          return parseBool(value);
        } catch (e) {
          throw new Error(`ssh: ${key}: ${message(e)}`);
        }
      };
      switch (key) {
        case "host":
          host = value;
          return;
        case "path":
          path = value;
          return;
        case "user":
          user = value;
          return;
        case "password":
          password = readSecret("ssh: password", value);
          return;
        case "identity":
          identities.push(value);
          return;
        case "known-hosts":
          knownHostsFile = value;
          return;
        case "verify-remote-host":
          verify = bool();
          return;
        case "port": {
          const n = /^[0-9]+$/.test(value) ? Number(value) : value === "ssh" ? 22 : NaN;
          if (!(n >= 1 && n <= 65535)) throw new Error(`ssh: port: not a TCP port: '${value}'`);
          port = n;
          return;
        }
        case "timeout":
          if (!/^[0-9]+$/.test(value) || Number(value) < 1) throw new Error(`ssh: timeout: expected seconds, not '${value}'`);
          timeout = Number(value);
          return;
        case "compression":
          compression = bool();
          return;
        case "create":
          create = bool();
          return;
        case "create-size":
          try {
            createSize = parseSize(value);
          } catch (e) {
            throw new Error(`ssh: create-size: ${message(e)}`);
          }
          return;
        case "create-mode":
          if (!/^0?[0-7]{3,4}$/.test(value)) throw new Error(`ssh: create-mode: expected an octal mode such as 0644, not '${value}'`);
          createMode = parseInt(value, 8);
          return;
        case "config":
          // nbdstate never reads ssh_config, which is what config= (empty) asks for.
          if (value === "") return;
          throw new Error("ssh: config=FILE: ssh configuration files are not read by nbdstate (give host=, port=, user=, identity= instead)");
        default:
          throw new Error(`ssh: unknown parameter '${key}'`);
      }
    },

    configComplete() {
      if (!host) throw new Error("ssh: the host parameter is required");
      if (!path) throw new Error("ssh: the path parameter is required");
      if (create && createSize === undefined) throw new Error("ssh: create=true needs create-size=");
      if (!create && createSize !== undefined) throw new Error("ssh: create-size= needs create=true");
      // Read the keys now: a bad identity= is a startup error. Default keys
      // that are missing, encrypted or unparsable are skipped, as ssh does.
      const given = identities.map(expand);
      const defaults = ["id_ed25519", "id_ecdsa", "id_rsa"].map((f) => join(homedir(), ".ssh", f)).filter((f) => existsSync(f));
      keys = [];
      for (const file of [...given, ...defaults]) {
        const explicit = given.includes(file);
        let text: Buffer;
        try {
          text = readFileSync(file);
        } catch (e) {
          if (!explicit) continue;
          throw new Error(`ssh: identity: cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? message(e)}`);
        }
        const parsed = ssh2.utils.parseKey(text);
        if (parsed instanceof Error) {
          if (!explicit) continue;
          throw new Error(`ssh: identity: ${file}: ${/encrypted/i.test(parsed.message) ? "the key is encrypted (use ssh-agent for keys with a passphrase)" : parsed.message}`);
        }
        keys.push({ file, key: text });
      }
      if (knownHostsFile !== undefined && verify && !existsSync(expand(knownHostsFile))) {
        throw new Error(`ssh: known-hosts: ${expand(knownHostsFile)}: no such file`);
      }
    },

    async open(readonly) {
      const cfg = connectConfig();
      const where = `${user ?? localUser()}@${knownHostName(host!, port)}:${path}`;
      try {
        if (create && !readonly) {
          // Created once, by the first connection (as nbdkit).
          created ??= SshSession.open({ connect: cfg, path: path!, readonly: false, create: { size: createSize!, mode: createMode } }).then(
            (s) => s.close(),
            (e: unknown) => {
              created = undefined; // the next connection tries again
              throw e;
            },
          );
          await created;
        }
        return await SshSession.open({ connect: cfg, path: path!, readonly });
      } catch (e) {
        const refusal = (cfg as { refusal?: string }).refusal;
        throw new Error(`ssh: ${where}: ${refusal ?? message(e)}`);
      }
    },

    async close(s) {
      await s.close();
    },

    getSize(s) {
      return s.size;
    },
    canWrite(s) {
      return !s.readonly;
    },
    canFlush(s) {
      return s.canFsync;
    },
    // Each SFTP write is done by the server (pwrite) before it is answered and
    // nothing is cached here: every connection reads what any other wrote.
    canMultiConn() {
      return true;
    },

    async pread(s, buf, offset) {
      try {
        await s.read(buf, offset);
      } catch (e) {
        throw fail(e);
      }
    },
    async pwrite(s, buf, offset) {
      if (s.readonly) throw new NbdError(NBD_EPERM, "ssh: the remote file is read-only");
      try {
        await s.write(buf, offset);
      } catch (e) {
        throw fail(e);
      }
    },
    async flush(s) {
      try {
        await s.fsync();
      } catch (e) {
        throw fail(e);
      }
    },
  };
}
