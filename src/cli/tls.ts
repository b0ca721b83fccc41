// TLS credentials, read once at startup as nbdkit reads them (nbdkit-tls(1)):
// --tls-psk=FILE ("identity:hexkey" lines, as psktool writes them) overrides
// certificates; otherwise --tls-certificates=DIR, or the built-in paths
// ($HOME/.pki/nbdkit, $HOME/.config/pki/nbdkit; /etc/pki/nbdkit for root),
// holding ca-cert.pem, server-cert.pem, server-key.pem and optionally
// ca-crl.pem. Any file that is missing, unreadable or malformed is a
// one-line startup error.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createPrivateKey, X509Certificate } from "node:crypto";
import type { TlsCredentials } from "../actors/tls.js";
import type { TlsMode } from "./args.js";
import { CliError } from "./errors.js";

export interface TlsArgs {
  tls: TlsMode;
  /** --tls was on the command line (otherwise the mode follows the credentials found). */
  tlsGiven?: boolean;
  tlsCertificates?: string;
  tlsPsk?: string;
  tlsVerifyPeer: boolean;
}

export interface TlsSetup {
  /** The effective mode: --tls, or "on" when credentials were given or found without it. */
  mode: TlsMode;
  credentials?: TlsCredentials;
}

/** The built-in certificate directories nbdkit looks in, in order. */
export function defaultCertificateDirs(env: NodeJS.ProcessEnv, uid: number): string[] {
  if (uid === 0) return ["/etc/pki/nbdkit"];
  const home = env.HOME;
  return home ? [join(home, ".pki", "nbdkit"), join(home, ".config", "pki", "nbdkit")] : [];
}

function why(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  if (err.code === "ENOENT") return "no such file";
  if (err.code === "EACCES") return "permission denied";
  if (err.code === "EISDIR") return "is a directory";
  return err.code ?? (err.message || String(e)).split("\n")[0]!;
}

function readFile(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new CliError(`${what}: cannot read ${path}: ${why(e)}`);
  }
}

/** Parse a PSK file: "identity:hexkey" per line; blank lines and '#' comments are skipped. */
export function parsePskFile(text: string, file: string): Map<string, Buffer> {
  const keys = new Map<string, Buffer>();
  text.split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === "" || line.startsWith("#")) return;
    const colon = line.lastIndexOf(":");
    const identity = colon > 0 ? line.slice(0, colon) : "";
    const hex = colon > 0 ? line.slice(colon + 1).trim() : "";
    if (identity === "" || hex === "" || hex.length % 2 !== 0 || !/^[0-9a-fA-F]+$/.test(hex)) {
      throw new CliError(`--tls-psk: ${file}:${i + 1}: expected "username:hexkey"`);
    }
    if (!keys.has(identity)) keys.set(identity, Buffer.from(hex, "hex"));
  });
  if (keys.size === 0) throw new CliError(`--tls-psk: ${file}: no keys in the file`);
  return keys;
}

function loadPsk(file: string): TlsCredentials {
  const text = readFile(file, "--tls-psk").toString("utf8");
  return { kind: "psk", file, keys: parsePskFile(text, file) };
}

/** Read the certificates of `dir`; throws CliError naming the first bad file. */
function loadCertificates(dir: string, verifyPeer: boolean): TlsCredentials {
  const what = "--tls-certificates";
  const ca = readFile(join(dir, "ca-cert.pem"), what);
  const cert = readFile(join(dir, "server-cert.pem"), what);
  const key = readFile(join(dir, "server-key.pem"), what);
  let crl: Buffer | undefined;
  try {
    crl = readFileSync(join(dir, "ca-crl.pem"));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw new CliError(`${what}: cannot read ${join(dir, "ca-crl.pem")}: ${why(e)}`);
  }
  // Parse now, so a broken file is a startup error rather than a failed handshake.
  const check = (file: string, f: () => unknown) => {
    try {
      f();
    } catch (e) {
      throw new CliError(`${what}: ${join(dir, file)}: ${(e instanceof Error ? e.message : String(e)).split("\n")[0]}`);
    }
  };
  check("ca-cert.pem", () => new X509Certificate(ca));
  check("server-cert.pem", () => new X509Certificate(cert));
  check("server-key.pem", () => createPrivateKey(key));
  return { kind: "certificates", dir, key, cert, ca, crl, verifyPeer };
}

/** Decide the TLS mode and load the credentials it needs. Throws CliError. */
export function loadTls(a: TlsArgs, env: NodeJS.ProcessEnv = process.env, uid = process.getuid?.() ?? -1): TlsSetup {
  // --tls=off: no TLS at all, whatever else was given (as nbdkit).
  if (a.tls === "off" && a.tlsGiven) return { mode: "off" };
  const mode: TlsMode = a.tlsGiven ? a.tls : "on";
  if (a.tlsPsk !== undefined) return { mode, credentials: loadPsk(a.tlsPsk) };
  if (a.tlsCertificates !== undefined) return { mode, credentials: loadCertificates(a.tlsCertificates, a.tlsVerifyPeer) };
  const dirs = defaultCertificateDirs(env, uid);
  for (const dir of dirs) {
    try {
      return { mode, credentials: loadCertificates(dir, a.tlsVerifyPeer) };
    } catch (e) {
      // Without --tls, certificates that are not there just mean no TLS.
      if (!a.tlsGiven) continue;
      // With it, a directory that has some of the files but not all is worth naming.
      if (e instanceof CliError && !/no such file/.test(e.message)) throw e;
    }
  }
  if (!a.tlsGiven) return { mode: "off" };
  throw new CliError(
    `--tls=${a.tls} but no certificates were found (looked in ${dirs.join(", ") || "no built-in path: HOME is not set"}); ` +
      "use --tls-certificates=DIR or --tls-psk=FILE",
  );
}
