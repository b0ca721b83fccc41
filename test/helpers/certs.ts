// TLS credentials for proxy tests, made with GnuTLS's certtool and psktool
// (gnutls-bin) in a temp dir: a CA, a server certificate for localhost and
// 127.0.0.1 in nbdkit's layout, a libnbd-style client dir (the CA, and a
// client certificate), a directory with another CA, and a PSK file.
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { makeTmpDir } from "./server.js";

export interface TestPki {
  dir: string;
  /** ca-cert.pem, server-cert.pem, server-key.pem (nbdkit --tls-certificates=). */
  server: string;
  /** ca-cert.pem, client-cert.pem, client-key.pem (libnbd / nbd plugin tls-certificates=). */
  client: string;
  /** ca-cert.pem of a CA that signed nothing here. */
  otherCa: string;
  /** "alice:hexkey" (psktool). */
  psk: string;
}

export function makePki(): TestPki {
  const dir = makeTmpDir("pki-");
  const run = (cmd: string, args: string[]) => execFileSync(cmd, args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
  const w = (name: string, text: string) => writeFileSync(join(dir, name), text);
  for (const ca of ["ca", "other-ca"]) {
    run("certtool", ["--generate-privkey", "--outfile", `${ca}-key.pem`]);
    w(`${ca}.info`, `cn = ${ca} of the nbdstate tests\nca\ncert_signing_key\nexpiration_days = 2\n`);
    run("certtool", ["--generate-self-signed", "--load-privkey", `${ca}-key.pem`, "--template", `${ca}.info`, "--outfile", `${ca}-cert.pem`]);
  }
  const sign = (keyFile: string, template: string, out: string) =>
    run("certtool", ["--generate-certificate", "--load-ca-certificate", "ca-cert.pem", "--load-ca-privkey", "ca-key.pem",
      "--load-privkey", keyFile, "--template", template, "--outfile", out]);
  run("certtool", ["--generate-privkey", "--outfile", "server-key.pem"]);
  w("server.info", "cn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\ntls_www_server\nencryption_key\nsigning_key\nexpiration_days = 2\n");
  sign("server-key.pem", "server.info", "server-cert.pem");
  run("certtool", ["--generate-privkey", "--outfile", "client-key.pem"]);
  w("client.info", "cn = client\ntls_www_client\nencryption_key\nsigning_key\nexpiration_days = 2\n");
  sign("client-key.pem", "client.info", "client-cert.pem");
  const sub = (name: string, files: Record<string, string>) => {
    const d = join(dir, name);
    mkdirSync(d, { mode: 0o700 });
    for (const [to, from] of Object.entries(files)) copyFileSync(join(dir, from), join(d, to));
    return d;
  };
  const psk = join(dir, "keys.psk");
  run("psktool", ["-u", "alice", "-p", psk]);
  return {
    dir,
    server: sub("server", { "ca-cert.pem": "ca-cert.pem", "server-cert.pem": "server-cert.pem", "server-key.pem": "server-key.pem" }),
    client: sub("client", { "ca-cert.pem": "ca-cert.pem", "client-cert.pem": "client-cert.pem", "client-key.pem": "client-key.pem" }),
    otherCa: sub("other", { "ca-cert.pem": "other-ca-cert.pem" }),
    psk,
  };
}
