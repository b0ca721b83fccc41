// OpenSSH known_hosts files (sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT"): which
// host keys are recorded for a host, and whether the key a server shows is
// one of them. Plain and hashed (|1|salt|hash) host names, "[host]:port"
// for ports other than 22, patterns with * and ?, negated patterns, and
// @revoked lines. @cert-authority lines are skipped (ssh2 has no host
// certificates).

import { createHmac, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";

export interface KnownKey {
  type: string;
  blob: Buffer;
  revoked: boolean;
  /** file:line, for messages. */
  where: string;
}

/** The name known_hosts records a host under: "host", or "[host]:port" off port 22. */
export function knownHostName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

function globToRegExp(p: string): RegExp {
  return new RegExp("^" + p.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".") + "$", "i");
}

function hashedMatches(entry: string, name: string): boolean {
  const m = /^\|1\|([^|]+)\|([^|]+)$/.exec(entry);
  if (!m) return false;
  const want = Buffer.from(m[2]!, "base64");
  const got = createHmac("sha1", Buffer.from(m[1]!, "base64")).update(name).digest();
  return want.length === got.length && timingSafeEqual(want, got);
}

/** Whether a comma-separated host field names this host (a negated match wins). */
function fieldMatches(field: string, names: string[]): boolean {
  if (field.startsWith("|")) return names.some((n) => hashedMatches(field, n));
  let hit = false;
  for (const pat of field.split(",")) {
    const neg = pat.startsWith("!");
    const re = globToRegExp(neg ? pat.slice(1) : pat);
    if (names.some((n) => re.test(n))) {
      if (neg) return false;
      hit = true;
    }
  }
  return hit;
}

/** The key type named inside an SSH public key blob (its first string). */
export function blobType(blob: Buffer): string {
  if (blob.length < 4) return "";
  const n = blob.readUInt32BE(0);
  return blob.subarray(4, 4 + n).toString("latin1");
}

/**
 * Keys recorded for host:port in these files. Missing files are skipped
 * (as ssh does); unreadable ones are an error.
 */
export function knownKeys(files: string[], host: string, port: number): KnownKey[] {
  // ssh looks the host up as written and, off port 22, also "[host]:port" only.
  const names = [knownHostName(host, port)];
  const out: KnownKey[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") continue;
      throw new Error(`known hosts file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    text.split(/\r?\n/).forEach((raw, i) => {
      const line = raw.trim();
      if (line === "" || line.startsWith("#")) return;
      const parts = line.split(/\s+/);
      let marker: string | undefined;
      if (parts[0]!.startsWith("@")) marker = parts.shift();
      if (marker === "@cert-authority" || parts.length < 3) return;
      const [hosts, type, key] = parts as [string, string, string];
      if (!fieldMatches(hosts, names)) return;
      const blob = Buffer.from(key, "base64");
      out.push({ type, blob, revoked: marker === "@revoked", where: `${file}:${i + 1}` });
    });
  }
  return out;
}

export type HostCheck = { ok: true } | { ok: false; reason: string };

/** Decide on the key a server presented, against what the files record for it. */
export function checkHostKey(known: KnownKey[], presented: Buffer, hostName: string, files: string[]): HostCheck {
  if (known.some((k) => k.revoked && k.blob.equals(presented))) {
    return { ok: false, reason: `the host key of ${hostName} is marked @revoked` };
  }
  const valid = known.filter((k) => !k.revoked);
  if (valid.some((k) => k.blob.equals(presented))) return { ok: true };
  const type = blobType(presented);
  const sameType = valid.find((k) => k.type === type);
  if (sameType) {
    return { ok: false, reason: `the ${type} host key of ${hostName} has CHANGED from the one in ${sameType.where} (possible man-in-the-middle attack)` };
  }
  return {
    ok: false,
    reason: `${hostName} is not a known host (no ${type} key for it in ${files.join(", ") || "no known hosts file"}; use known-hosts= or verify-remote-host=false)`,
  };
}
