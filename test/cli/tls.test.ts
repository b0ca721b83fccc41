// src/cli/tls.ts: which TLS mode the command line means, and the
// credentials read at startup (one-line errors for bad files).
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseArgs } from "../../src/cli/args.js";
import { CliError } from "../../src/cli/errors.js";
import { defaultCertificateDirs, loadTls, parsePskFile } from "../../src/cli/tls.js";

const KEY = "9b9b1d49da6764bbcbb5183b34cd39e32d8eddf5a09d52bd517f7b8823532a6b";

describe("parsePskFile", () => {
  it("reads psktool's username:hexkey lines", () => {
    const keys = parsePskFile(`alice:${KEY}\nbob:00ff\n`, "k.psk");
    expect([...keys.keys()]).toEqual(["alice", "bob"]);
    expect(keys.get("alice")!.toString("hex")).toBe(KEY);
    expect(keys.get("bob")).toEqual(Buffer.from([0, 255]));
  });

  it("skips blank lines and comments; the first key of a username wins", () => {
    const keys = parsePskFile(`# keys\n\nalice:${KEY}\r\nalice:00\n`, "k.psk");
    expect(keys.get("alice")!.toString("hex")).toBe(KEY);
  });

  it("refuses malformed lines and empty files, naming the line", () => {
    const bad = (text: string) => () => parsePskFile(text, "k.psk");
    expect(bad("alice\n")).toThrow(/^--tls-psk: k\.psk:1: expected "username:hexkey"$/);
    expect(bad(`alice:${KEY}\nbob:xyz\n`)).toThrow(/k\.psk:2: expected/);
    expect(bad("bob:abc\n")).toThrow(/k\.psk:1/); // odd number of hex digits
    expect(bad(":00\n")).toThrow(/k\.psk:1/);
    expect(bad("\n# nothing\n")).toThrow(/no keys in the file/);
    expect(bad("alice\n")).toThrow(CliError);
  });
});

describe("loadTls", () => {
  let dir: string;
  let certs: string;
  let psk: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "nbdstate-clitls-"));
    certs = join(dir, "certs");
    mkdirSync(certs);
    execFileSync("openssl", [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=localhost",
      "-keyout", join(certs, "server-key.pem"), "-out", join(certs, "server-cert.pem"),
    ], { stdio: "ignore" });
    copyFileSync(join(certs, "server-cert.pem"), join(certs, "ca-cert.pem"));
    psk = join(dir, "keys.psk");
    writeFileSync(psk, `alice:${KEY}\n`);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const emptyHome = () => ({ HOME: join(dir, "nohome") });
  const load = (argv: string[], env: NodeJS.ProcessEnv = emptyHome(), uid = 1000) => loadTls(parseArgs([...argv, "null"]), env, uid);

  it("no TLS flags and no certificates anywhere: off", () => {
    expect(load([])).toEqual({ mode: "off" });
  });

  it("--tls=off wins over credentials (nothing is read)", () => {
    expect(load(["--tls=off", "--tls-psk=/does/not/exist"])).toEqual({ mode: "off" });
  });

  it("--tls-psk or --tls-certificates alone mean --tls=on", () => {
    const p = load([`--tls-psk=${psk}`]);
    expect(p.mode).toBe("on");
    expect(p.credentials).toMatchObject({ kind: "psk", file: psk });
    const c = load([`--tls-certificates=${certs}`]);
    expect(c.mode).toBe("on");
    expect(c.credentials).toMatchObject({ kind: "certificates", dir: certs, verifyPeer: false });
  });

  it("--tls-psk overrides certificates; --tls-verify-peer reaches the credentials", () => {
    expect(load(["--tls=require", `--tls-psk=${psk}`, `--tls-certificates=${certs}`]).credentials?.kind).toBe("psk");
    expect(load(["--tls=require", `--tls-certificates=${certs}`, "--tls-verify-peer"]).credentials).toMatchObject({ verifyPeer: true });
  });

  it("the built-in directories: $HOME/.pki/nbdkit for users, /etc/pki/nbdkit for root", () => {
    expect(defaultCertificateDirs({ HOME: "/h" }, 1000)).toEqual(["/h/.pki/nbdkit", "/h/.config/pki/nbdkit"]);
    expect(defaultCertificateDirs({ HOME: "/h" }, 0)).toEqual(["/etc/pki/nbdkit"]);
    expect(defaultCertificateDirs({}, 1000)).toEqual([]);
    const home = join(dir, "home");
    mkdirSync(join(home, ".config", "pki"), { recursive: true });
    execFileSync("cp", ["-r", certs, join(home, ".config", "pki", "nbdkit")]);
    // Found without --tls: TLS is on (as nbdkit); with --tls=require, used.
    expect(load([], { HOME: home })).toMatchObject({ mode: "on", credentials: { dir: join(home, ".config", "pki", "nbdkit") } });
    expect(load(["--tls=require"], { HOME: home }).mode).toBe("require");
  });

  it("--tls=on|require without credentials is an error naming where it looked", () => {
    expect(() => load(["--tls=on"])).toThrow(/--tls=on but no certificates were found \(looked in .*nohome\/\.pki\/nbdkit/);
    expect(() => load(["--tls=require"], {})).toThrow(/HOME is not set/);
  });

  it("missing, unreadable or malformed files are one-line errors", () => {
    expect(() => load([`--tls-psk=${join(dir, "none.psk")}`])).toThrow(/^--tls-psk: cannot read .*none\.psk: no such file$/);
    expect(() => load([`--tls-psk=${dir}`])).toThrow(/^--tls-psk: cannot read .*: is a directory$/);
    const half = join(dir, "half");
    mkdirSync(half);
    copyFileSync(join(certs, "ca-cert.pem"), join(half, "ca-cert.pem"));
    expect(() => load([`--tls-certificates=${half}`])).toThrow(/^--tls-certificates: cannot read .*server-cert\.pem: no such file$/);
    const broken = join(dir, "broken");
    mkdirSync(broken);
    for (const f of ["ca-cert.pem", "server-key.pem"]) copyFileSync(join(certs, f), join(broken, f));
    writeFileSync(join(broken, "server-cert.pem"), "not a certificate\n");
    let msg = "";
    try {
      load([`--tls-certificates=${broken}`]);
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toMatch(/^--tls-certificates: .*server-cert\.pem: /);
    expect(msg).not.toContain("\n");
  });
});
