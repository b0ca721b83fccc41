// TLS (nbdkit-tls(1)): --tls=off|on|require, --tls-certificates=DIR,
// --tls-verify-peer, --tls-psk=FILE, and STARTTLS done right.
//
// Certificates (a CA, a server certificate for localhost/127.0.0.1, a
// client certificate, and a client certificate from a rogue CA) are made
// with certtool and PSK files with psktool in a temporary directory. The
// clients are libnbd's (nbdinfo, nbdcopy over nbds+unix:// and nbds://),
// plus raw clients (node:net, node:tls) for what libnbd will not do: options
// before TLS under --tls=require, and the STARTTLS injection attack (options
// pipelined in the same write as NBD_OPT_STARTTLS must never be acted on).
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { requireTools, TOOLS } from "../helpers/tools.js";
import {
  isNbdkit,
  isNbdstate,
  makeTmpDir,
  removeTmpDir,
  run,
  runCli,
  runOk,
  sleep,
  startServer,
  startTcpServer,
  type RunningServer,
} from "../helpers/server.js";
import {
  CMD,
  encodeOption,
  encodeRequest,
  handshake,
  OPT,
  OPTION_REPLY_MAGIC,
  RawConn,
  readOptionReply,
  REP,
  SIMPLE_REPLY_MAGIC,
  u16,
  u32,
} from "../helpers/raw.js";

const ok = requireTools([TOOLS.nbdinfo, TOOLS.nbdcopy, ["certtool", "gnutls-bin"], ["psktool", "gnutls-bin"]]);

const MiB = 1 << 20;

interface NbdinfoJson {
  protocol: string;
  TLS: boolean;
  exports: Array<{ "export-name": string; "export-size": number; description?: string }>;
}

async function infoJson(uri: string, extra: string[] = []): Promise<NbdinfoJson> {
  const r = await runOk("nbdinfo", ["--json", ...extra, uri], { timeoutMs: 30_000 });
  return JSON.parse(r.stdout) as NbdinfoJson;
}

/** nbdinfo that is expected to fail: its exit code and stderr. */
async function infoFails(uri: string): Promise<string> {
  const r = await run("nbdinfo", ["--json", uri], { timeoutMs: 30_000 });
  expect(r.timedOut).toBe(false);
  expect(r.code, `nbdinfo ${uri} should fail; stdout: ${r.stdout}`).not.toBe(0);
  return r.stderr;
}

/** The option payload of NBD_OPT_GO/INFO for `name` with no info requests. */
function goPayload(name = ""): Buffer {
  const n = Buffer.from(name);
  return Buffer.concat([u32(n.length), n, u16(0)]);
}

// ---------------------------------------------------------------------------
// Credentials

interface Keys {
  dir: string;
  /** Server: ca-cert.pem, server-cert.pem, server-key.pem. */
  server: string;
  /** libnbd client dir: ca-cert.pem + client-cert.pem + client-key.pem. */
  client: string;
  /** libnbd client dir with the CA only (no client certificate). */
  caOnly: string;
  /** libnbd client dir with the right CA but a client certificate from another CA. */
  rogue: string;
  /** psktool -u alice. */
  psk: string;
  /** alice again, with another key. */
  wrongPsk: string;
  /** bob, unknown to the server. */
  bobPsk: string;
  ca: Buffer;
}

function certtool(args: string[], cwd: string): void {
  execFileSync("certtool", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
}

function makeKeys(): Keys {
  const dir = makeTmpDir("nbdstate-tls-");
  const w = (name: string, text: string) => writeFileSync(join(dir, name), text);
  const key = (name: string) => certtool(["--generate-privkey", "--outfile", name], dir);
  const sign = (caPrefix: string, keyFile: string, template: string, out: string) =>
    certtool(
      ["--generate-certificate", "--load-ca-certificate", `${caPrefix}-cert.pem`, "--load-ca-privkey", `${caPrefix}-key.pem`,
        "--load-privkey", keyFile, "--template", template, "--outfile", out],
      dir,
    );
  for (const ca of ["ca", "rogue-ca"]) {
    key(`${ca}-key.pem`);
    w(`${ca}.info`, `cn = ${ca} of the nbdstate tests\nca\ncert_signing_key\nexpiration_days = 2\n`);
    certtool(["--generate-self-signed", "--load-privkey", `${ca}-key.pem`, "--template", `${ca}.info`, "--outfile", `${ca}-cert.pem`], dir);
  }
  key("server-key.pem");
  w("server.info", "organization = nbdstate tests\ncn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\n" +
    "tls_www_server\nencryption_key\nsigning_key\nexpiration_days = 2\n");
  sign("ca", "server-key.pem", "server.info", "server-cert.pem");
  key("client-key.pem");
  w("client.info", "organization = nbdstate tests\ncn = client.example.com\ntls_www_client\nencryption_key\nsigning_key\nexpiration_days = 2\n");
  sign("ca", "client-key.pem", "client.info", "client-cert.pem");
  sign("rogue-ca", "client-key.pem", "client.info", "rogue-client-cert.pem");

  const sub = (name: string, files: Record<string, string>) => {
    const d = join(dir, name);
    mkdirSync(d, { mode: 0o700 });
    for (const [to, from] of Object.entries(files)) copyFileSync(join(dir, from), join(d, to));
    return d;
  };
  const server = sub("server", { "ca-cert.pem": "ca-cert.pem", "server-cert.pem": "server-cert.pem", "server-key.pem": "server-key.pem" });
  const client = sub("client", { "ca-cert.pem": "ca-cert.pem", "client-cert.pem": "client-cert.pem", "client-key.pem": "client-key.pem" });
  const caOnly = sub("ca-only", { "ca-cert.pem": "ca-cert.pem" });
  const rogue = sub("rogue", { "ca-cert.pem": "ca-cert.pem", "client-cert.pem": "rogue-client-cert.pem", "client-key.pem": "client-key.pem" });

  const psktool = (user: string, file: string) => execFileSync("psktool", ["-u", user, "-p", join(dir, file)], { stdio: "ignore" });
  psktool("alice", "keys.psk");
  psktool("alice", "wrong.psk");
  psktool("bob", "bob.psk");
  // psktool appends to an existing file; make sure alice's two keys differ.
  expect(readFileSync(join(dir, "keys.psk"), "utf8")).not.toBe(readFileSync(join(dir, "wrong.psk"), "utf8"));
  return {
    dir, server, client, caOnly, rogue,
    psk: join(dir, "keys.psk"), wrongPsk: join(dir, "wrong.psk"), bobPsk: join(dir, "bob.psk"),
    ca: readFileSync(join(dir, "ca-cert.pem")),
  };
}

const unixTls = (srv: RunningServer, query: string, user = "") => `nbds+unix://${user ? `${user}@` : ""}/?socket=${srv.sock}&${query}`;
const tcpTls = (host: string, srv: RunningServer, query: string, user = "") =>
  `nbds://${user ? `${user}@` : ""}${host}:${srv.port}/?${query}`;

// ---------------------------------------------------------------------------
// A raw client that can switch to TLS on the same socket (node:tls).

/** Exact-length reads from any stream (the TLS socket after STARTTLS). */
class StreamReader {
  private buf = Buffer.alloc(0);
  private ended = false;
  private wake: (() => void) | null = null;
  constructor(stream: NodeJS.ReadableStream) {
    stream.on("data", (b: Buffer) => {
      this.buf = Buffer.concat([this.buf, b]);
      this.wake?.();
    });
    const end = () => {
      this.ended = true;
      this.wake?.();
    };
    stream.on("end", end);
    stream.on("close", end);
    stream.on("error", end);
  }
  async read(n: number, timeoutMs = 10_000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.buf.length < n) {
      if (this.ended) throw new Error(`closed after ${this.buf.length} of ${n} bytes`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timeout reading ${n} bytes`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.wake = () => {
          clearTimeout(t);
          this.wake = null;
          r();
        };
      });
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }
  async optionReply(): Promise<{ option: number; type: number; data: Buffer }> {
    const h = await this.read(20);
    expect(h.readBigUInt64BE(0)).toBe(OPTION_REPLY_MAGIC);
    const len = h.readUInt32BE(16);
    return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: len ? await this.read(len) : Buffer.alloc(0) };
  }
}

/**
 * Hand the raw connection's socket to a TLS client (certificates: verifies
 * the server against the test CA). Resolves with the TLS socket, or with
 * the handshake error.
 */
function clientTls(conn: RawConn, ca: Buffer, timeoutMs = 10_000): Promise<tls.TLSSocket | Error> {
  const s = conn.socket;
  for (const ev of ["data", "end", "close", "error"]) s.removeAllListeners(ev);
  s.on("error", () => {});
  return new Promise((resolve) => {
    const t = tls.connect({ socket: s, ca, servername: "localhost" });
    const timer = setTimeout(() => {
      t.destroy();
      resolve(new Error("TLS handshake timed out"));
    }, timeoutMs);
    t.once("secureConnect", () => {
      clearTimeout(timer);
      resolve(t);
    });
    t.once("error", (e) => {
      clearTimeout(timer);
      t.destroy();
      resolve(e);
    });
  });
}

// ---------------------------------------------------------------------------

describe.skipIf(!ok)(`TLS (${isNbdkit ? "nbdkit" : "nbdstate"})`, () => {
  let keys: Keys;
  beforeAll(() => {
    keys = makeKeys();
  });
  afterAll(() => {
    if (keys) removeTmpDir(keys.dir);
  });

  describe("X.509 certificates, --tls=require", () => {
    let srv: RunningServer;
    let tcp: RunningServer;
    beforeAll(async () => {
      srv = await startServer(["--tls=require", `--tls-certificates=${keys.server}`, "memory", "4M"]);
      tcp = await startTcpServer(["--tls=require", `--tls-certificates=${keys.server}`, "memory", "4M"]);
    });
    afterAll(async () => {
      await srv?.stop();
      await tcp?.stop();
    });

    it("nbdinfo over nbds+unix:// with tls-certificates", async () => {
      const j = await infoJson(unixTls(srv, `tls-certificates=${keys.caOnly}`));
      expect(j.TLS).toBe(true);
      expect(j.exports[0]!["export-size"]).toBe(4 * MiB);
    });

    it("nbdinfo over nbds:// on 127.0.0.1 (by address and by name)", async () => {
      for (const host of ["127.0.0.1", "localhost"]) {
        const j = await infoJson(tcpTls(host, tcp, `tls-certificates=${keys.caOnly}`));
        expect(j.TLS).toBe(true);
        expect(j.exports[0]!["export-size"]).toBe(4 * MiB);
      }
    });

    it("nbdcopy writes and reads back through TLS (unix and TCP)", async () => {
      const dir = makeTmpDir("nbdstate-tls-copy-");
      try {
        const src = join(dir, "src.img");
        const data = randomBytes(4 * MiB);
        writeFileSync(src, data);
        for (const uri of [unixTls(srv, `tls-certificates=${keys.caOnly}`), tcpTls("localhost", tcp, `tls-certificates=${keys.caOnly}`)]) {
          const back = join(dir, "back.img");
          await runOk("nbdcopy", [src, uri], { timeoutMs: 60_000 });
          await runOk("nbdcopy", [uri, back], { timeoutMs: 60_000 });
          expect(readFileSync(back).equals(data)).toBe(true);
        }
      } finally {
        removeTmpDir(dir);
      }
    });

    // (Over TCP: libnbd 1.14 does not verify the server's certificate on a
    // unix socket, which has no host name to check it against.)
    it("a server certificate from an unknown CA is refused by the client (TCP)", async () => {
      const d = makeTmpDir("nbdstate-tls-otherca-");
      try {
        copyFileSync(join(keys.dir, "rogue-ca-cert.pem"), join(d, "ca-cert.pem"));
        await infoFails(tcpTls("localhost", tcp, `tls-certificates=${d}`));
      } finally {
        removeTmpDir(d);
      }
    });

    it("a plain client (nbd+unix://) fails: the export is not served without TLS", async () => {
      await infoFails(srv.uri);
      const r = await run("nbdinfo", ["--list", srv.uri], { timeoutMs: 30_000 });
      expect(r.code).not.toBe(0);
    });

    it("raw client before TLS: LIST, GO, INFO, STRUCTURED_REPLY, META_CONTEXT and unknown options get NBD_REP_ERR_TLS_REQD and reveal nothing", async () => {
      const c = await RawConn.connect(srv.sock);
      try {
        await handshake(c);
        const meta = Buffer.concat([u32(0), u32(1), u32(15), Buffer.from("base:allocation")]);
        const tries: Array<[number, Buffer]> = [
          [OPT.LIST, Buffer.alloc(0)],
          [OPT.GO, goPayload()],
          [OPT.INFO, goPayload("")],
          [OPT.STRUCTURED_REPLY, Buffer.alloc(0)],
          [OPT.LIST_META_CONTEXT, meta],
          [OPT.SET_META_CONTEXT, meta],
          [99, Buffer.alloc(0)],
        ];
        for (const [opt, data] of tries) {
          c.write(encodeOption(opt, data));
          const r = await readOptionReply(c);
          expect(r.option).toBe(opt);
          expect(r.type, `option ${opt}`).toBe(REP.ERR_TLS_REQD);
        }
        // Still negotiating: ABORT is allowed before TLS and gets its ACK.
        c.write(encodeOption(OPT.ABORT));
        const a = await readOptionReply(c);
        expect([a.option, a.type]).toEqual([OPT.ABORT, REP.ACK]);
        expect(await c.waitClosed(5000)).toBe(true);
      } finally {
        c.destroy();
      }
    });

    it("raw client before TLS: NBD_OPT_EXPORT_NAME closes the connection with no reply", async () => {
      const c = await RawConn.connect(srv.sock);
      try {
        await handshake(c);
        c.write(encodeOption(OPT.EXPORT_NAME, Buffer.from("")));
        // No export size, no flags: the server hangs up.
        expect(await c.waitClosed(5000)).toBe(true);
        expect(c.bufferedBytes).toBe(0);
      } finally {
        c.destroy();
      }
    });

    it("STARTTLS, then options inside TLS (raw client on node:tls)", async () => {
      const c = await RawConn.connect(srv.sock);
      try {
        await handshake(c);
        c.write(encodeOption(OPT.STARTTLS));
        const ack = await readOptionReply(c);
        expect([ack.option, ack.type]).toEqual([OPT.STARTTLS, REP.ACK]);
        const t = await clientTls(c, keys.ca);
        if (t instanceof Error) throw t;
        try {
          const r = new StreamReader(t);
          t.write(encodeOption(OPT.LIST));
          const s = await r.optionReply();
          expect([s.option, s.type]).toEqual([OPT.LIST, REP.SERVER]);
          const end = await r.optionReply();
          expect([end.option, end.type]).toEqual([OPT.LIST, REP.ACK]);
          // A second STARTTLS inside TLS is refused, and the session goes on.
          t.write(encodeOption(OPT.STARTTLS));
          const again = await r.optionReply();
          expect(again.option).toBe(OPT.STARTTLS);
          expect(again.type & 0x80000000).not.toBe(0);
          t.write(encodeOption(OPT.GO, goPayload()));
          let reply = await r.optionReply();
          while (reply.type === REP.INFO) reply = await r.optionReply();
          expect([reply.option, reply.type]).toEqual([OPT.GO, REP.ACK]);
        } finally {
          t.destroy();
        }
      } finally {
        c.destroy();
      }
    });

    // The STARTTLS injection class of bug (CVE-2021-3716 in nbdkit, and the
    // SMTP/IMAP ones before it): bytes that arrive in the same write as
    // STARTTLS were sent in clear text, so a man in the middle can add them.
    // A server must never act on them after the upgrade.
    for (const [what, pipelined] of [
      ["NBD_OPT_GO", () => encodeOption(OPT.GO, goPayload())],
      ["NBD_OPT_LIST", () => encodeOption(OPT.LIST)],
      ["NBD_OPT_STRUCTURED_REPLY + NBD_OPT_GO", () => Buffer.concat([encodeOption(OPT.STRUCTURED_REPLY), encodeOption(OPT.GO, goPayload())])],
    ] as const) {
      it(`injection: STARTTLS with a pipelined ${what} in the same write is never acted on`, async () => {
        const c = await RawConn.connect(srv.sock);
        try {
          await handshake(c);
          await c.writeAsync(Buffer.concat([encodeOption(OPT.STARTTLS), pipelined()]));
          const ack = await readOptionReply(c);
          expect([ack.option, ack.type]).toEqual([OPT.STARTTLS, REP.ACK]);
          // Nothing more in clear text: no NBD_REP_INFO/SERVER/ACK for the
          // pipelined option (the server waits for a ClientHello).
          await sleep(300);
          if (c.bufferedBytes >= 8) {
            const peek = await c.read(8);
            expect(peek.readBigUInt64BE(0)).not.toBe(OPTION_REPLY_MAGIC);
          }
          // Either the pipelined bytes were thrown away (then a real
          // handshake works and the first reply inside TLS is to our own
          // option) or they were taken as TLS records (the handshake fails).
          const t = await clientTls(c, keys.ca, 5000);
          if (t instanceof Error) return;
          try {
            const r = new StreamReader(t);
            t.write(encodeOption(OPT.INFO, goPayload()));
            let reply = await r.optionReply();
            expect(reply.option, "the first reply inside TLS answers the option sent inside TLS").toBe(OPT.INFO);
            while (reply.type === REP.INFO) reply = await r.optionReply();
            expect([reply.option, reply.type]).toEqual([OPT.INFO, REP.ACK]);
            t.write(encodeOption(OPT.ABORT));
            const a = await r.optionReply();
            expect([a.option, a.type]).toEqual([OPT.ABORT, REP.ACK]);
          } finally {
            t.destroy();
          }
        } finally {
          c.destroy();
        }
      });
    }

    it.skipIf(isNbdkit)("injection: the pipelined bytes do not reach the TLS session (nbdstate discards them)", async () => {
      const c = await RawConn.connect(srv.sock);
      try {
        await handshake(c);
        await c.writeAsync(Buffer.concat([encodeOption(OPT.STARTTLS), encodeOption(OPT.GO, goPayload())]));
        const ack = await readOptionReply(c);
        expect(ack.type).toBe(REP.ACK);
        const t = await clientTls(c, keys.ca);
        expect(t).not.toBeInstanceOf(Error);
        (t as tls.TLSSocket).destroy();
      } finally {
        c.destroy();
      }
    });

    it("STARTTLS with a payload is NBD_REP_ERR_INVALID, and TLS is still required after it", async () => {
      const c = await RawConn.connect(srv.sock);
      try {
        await handshake(c);
        c.write(encodeOption(OPT.STARTTLS, Buffer.from("junk")));
        const r = await readOptionReply(c);
        expect([r.option, r.type]).toEqual([OPT.STARTTLS, REP.ERR_INVALID]);
        c.write(encodeOption(OPT.LIST));
        const l = await readOptionReply(c);
        expect(l.type).toBe(REP.ERR_TLS_REQD);
      } finally {
        c.destroy();
      }
    });

    it("a client that sends garbage instead of a ClientHello is cut off; the server keeps serving", async () => {
      const c = await RawConn.connect(srv.sock);
      try {
        await handshake(c);
        c.write(encodeOption(OPT.STARTTLS));
        expect((await readOptionReply(c)).type).toBe(REP.ACK);
        c.write(Buffer.from("this is not a TLS record, it is a plain text lie\r\n".repeat(4)));
        expect(await c.waitClosed(10_000)).toBe(true);
      } finally {
        c.destroy();
      }
      const j = await infoJson(unixTls(srv, `tls-certificates=${keys.caOnly}`));
      expect(j.TLS).toBe(true);
    });
  });

  describe("--tls=on: plain and TLS clients both work", () => {
    let srv: RunningServer;
    beforeAll(async () => {
      srv = await startServer(["--tls=on", `--tls-certificates=${keys.server}`, "memory", "1M"]);
    });
    afterAll(async () => {
      await srv?.stop();
    });

    it("nbd+unix:// without TLS, nbds+unix:// with", async () => {
      const plain = await infoJson(srv.uri);
      expect(plain.TLS).toBe(false);
      const secure = await infoJson(unixTls(srv, `tls-certificates=${keys.caOnly}`));
      expect(secure.TLS).toBe(true);
      expect(secure.exports[0]!["export-size"]).toBe(MiB);
    });

    it("plain options work before TLS; STARTTLS is accepted", async () => {
      const c = await RawConn.connect(srv.sock);
      try {
        await handshake(c);
        c.write(encodeOption(OPT.LIST));
        expect((await readOptionReply(c)).type).toBe(REP.SERVER);
        expect((await readOptionReply(c)).type).toBe(REP.ACK);
        c.write(encodeOption(OPT.STARTTLS));
        expect((await readOptionReply(c)).type).toBe(REP.ACK);
        const t = await clientTls(c, keys.ca);
        expect(t).not.toBeInstanceOf(Error);
        (t as tls.TLSSocket).destroy();
      } finally {
        c.destroy();
      }
    });
  });

  describe("--tls=on: what was negotiated in clear text is forgotten after STARTTLS", () => {
    let srv: RunningServer;
    beforeAll(async () => {
      srv = await startServer(["--tls=on", `--tls-certificates=${keys.server}`, "memory", "1M"]);
    });
    afterAll(async () => {
      await srv?.stop();
    });

    it("structured replies and meta contexts set before STARTTLS do not carry over", async () => {
      const c = await RawConn.connect(srv.sock);
      try {
        await handshake(c);
        c.write(encodeOption(OPT.STRUCTURED_REPLY));
        expect((await readOptionReply(c)).type).toBe(REP.ACK);
        const meta = Buffer.concat([u32(0), u32(1), u32(15), Buffer.from("base:allocation")]);
        c.write(encodeOption(OPT.SET_META_CONTEXT, meta));
        expect((await readOptionReply(c)).type).toBe(REP.META_CONTEXT);
        expect((await readOptionReply(c)).type).toBe(REP.ACK);
        c.write(encodeOption(OPT.STARTTLS));
        expect((await readOptionReply(c)).type).toBe(REP.ACK);
        const t = await clientTls(c, keys.ca);
        if (t instanceof Error) throw t;
        try {
          const r = new StreamReader(t);
          t.write(encodeOption(OPT.GO, goPayload()));
          let reply = await r.optionReply();
          while (reply.type === REP.INFO) reply = await r.optionReply();
          expect([reply.option, reply.type]).toEqual([OPT.GO, REP.ACK]);
          // A READ gets a simple reply: structured replies were not negotiated inside TLS.
          t.write(encodeRequest({ type: CMD.READ, handle: 7n, offset: 0, length: 512 }));
          const h = await r.read(16);
          expect(h.readUInt32BE(0)).toBe(SIMPLE_REPLY_MAGIC);
          expect(h.readUInt32BE(4)).toBe(0);
          expect(h.readBigUInt64BE(8)).toBe(7n);
          expect((await r.read(512)).equals(Buffer.alloc(512))).toBe(true);
        } finally {
          t.destroy();
        }
      } finally {
        c.destroy();
      }
    });
  });

  describe("--tls=off", () => {
    it("STARTTLS is refused with NBD_REP_ERR_POLICY and the session continues in clear", async () => {
      const srv = await startServer(["memory", "1M"]);
      try {
        const c = await RawConn.connect(srv.sock);
        try {
          await handshake(c);
          c.write(encodeOption(OPT.STARTTLS));
          const r = await readOptionReply(c);
          expect([r.option, r.type]).toEqual([OPT.STARTTLS, REP.ERR_POLICY]);
          c.write(encodeOption(OPT.LIST));
          expect((await readOptionReply(c)).type).toBe(REP.SERVER);
        } finally {
          c.destroy();
        }
        await infoFails(unixTls(srv, `tls-certificates=${keys.caOnly}`));
      } finally {
        await srv.stop();
      }
    });
  });

  describe("--tls-verify-peer", () => {
    let srv: RunningServer;
    beforeAll(async () => {
      srv = await startServer(["--tls=require", `--tls-certificates=${keys.server}`, "--tls-verify-peer", "memory", "1M"]);
    });
    afterAll(async () => {
      await srv?.stop();
    });

    it("a client certificate signed by ca-cert.pem is accepted", async () => {
      const j = await infoJson(unixTls(srv, `tls-certificates=${keys.client}`));
      expect(j.TLS).toBe(true);
    });

    it("no client certificate: refused", async () => {
      await infoFails(unixTls(srv, `tls-certificates=${keys.caOnly}`));
    });

    it("a client certificate from another CA: refused", async () => {
      await infoFails(unixTls(srv, `tls-certificates=${keys.rogue}`));
    });

    it("without --tls-verify-peer a client certificate is not needed", async () => {
      const open = await startServer(["--tls=require", `--tls-certificates=${keys.server}`, "memory", "1M"]);
      try {
        expect((await infoJson(unixTls(open, `tls-certificates=${keys.caOnly}`))).TLS).toBe(true);
        expect((await infoJson(unixTls(open, `tls-certificates=${keys.rogue}`))).TLS).toBe(true);
      } finally {
        await open.stop();
      }
    });
  });

  describe("pre-shared keys (--tls-psk)", () => {
    let srv: RunningServer;
    let tcp: RunningServer;
    beforeAll(async () => {
      srv = await startServer(["--tls=require", `--tls-psk=${keys.psk}`, "memory", "4M"]);
      tcp = await startTcpServer(["--tls=require", `--tls-psk=${keys.psk}`, "memory", "4M"]);
    });
    afterAll(async () => {
      await srv?.stop();
      await tcp?.stop();
    });

    it("nbdinfo with alice's key over nbds+unix:// and nbds://", async () => {
      const u = await infoJson(unixTls(srv, `tls-psk-file=${keys.psk}`, "alice"));
      expect(u.TLS).toBe(true);
      expect(u.exports[0]!["export-size"]).toBe(4 * MiB);
      const t = await infoJson(tcpTls("127.0.0.1", tcp, `tls-psk-file=${keys.psk}`, "alice"));
      expect(t.TLS).toBe(true);
    });

    it("nbdcopy writes and reads back with PSK", async () => {
      const dir = makeTmpDir("nbdstate-tls-psk-copy-");
      try {
        const src = join(dir, "src.img");
        const back = join(dir, "back.img");
        const data = randomBytes(4 * MiB);
        writeFileSync(src, data);
        const uri = unixTls(srv, `tls-psk-file=${keys.psk}`, "alice");
        await runOk("nbdcopy", [src, uri], { timeoutMs: 60_000 });
        await runOk("nbdcopy", [uri, back], { timeoutMs: 60_000 });
        expect(readFileSync(back).equals(data)).toBe(true);
      } finally {
        removeTmpDir(dir);
      }
    });

    it("a wrong key for alice is refused", async () => {
      await infoFails(unixTls(srv, `tls-psk-file=${keys.wrongPsk}`, "alice"));
      await infoFails(tcpTls("127.0.0.1", tcp, `tls-psk-file=${keys.wrongPsk}`, "alice"));
    });

    it("an identity not in the file (bob) is refused", async () => {
      await infoFails(unixTls(srv, `tls-psk-file=${keys.bobPsk}`, "bob"));
    });

    it("a plain client is refused", async () => {
      await infoFails(srv.uri);
    });

    it("the server keeps serving after refused handshakes", async () => {
      for (let i = 0; i < 3; i++) await infoFails(unixTls(srv, `tls-psk-file=${keys.wrongPsk}`, "alice"));
      expect((await infoJson(unixTls(srv, `tls-psk-file=${keys.psk}`, "alice"))).TLS).toBe(true);
      expect(srv.exited).toBe(false);
    });
  });

  describe.skipIf(isNbdkit)("the plugin sees tls=true only after the upgrade (ListParams, open)", () => {
    let dir: string;
    let plugin: string;
    beforeAll(() => {
      dir = makeTmpDir("nbdstate-tlsprobe-");
      plugin = join(dir, "tlsprobe.mjs");
      writeFileSync(
        plugin,
        `export default {
  name: "tlsprobe",
  listExports: ({ tls }) => [{ name: tls ? "listed-with-tls" : "listed-in-clear" }],
  defaultExport: ({ tls }) => (tls ? "default-with-tls" : "default-in-clear"),
  open: (_ro, name, tls) => ({ name, tls }),
  getSize: () => 4096,
  exportDescription: (h) => "opened " + h.name + " tls=" + h.tls,
  pread: (_h, buf) => { buf.fill(0); },
};
`,
      );
    });
    afterAll(() => removeTmpDir(dir));

    it("listing, default export and open, in clear and over TLS (--tls=on)", async () => {
      const srv = await startServer(["--tls=on", `--tls-psk=${keys.psk}`, plugin]);
      try {
        const clear = await infoJson(srv.uri, ["--list"]);
        expect(clear.exports.map((e) => e["export-name"])).toEqual(["listed-in-clear"]);
        const secure = await infoJson(unixTls(srv, `tls-psk-file=${keys.psk}`, "alice"), ["--list"]);
        expect(secure.exports.map((e) => e["export-name"])).toEqual(["listed-with-tls"]);
        const one = await infoJson(unixTls(srv, `tls-psk-file=${keys.psk}`, "alice"));
        expect(one.exports[0]!.description).toBe("opened default-with-tls tls=true");
        const plain = await infoJson(srv.uri);
        expect(plain.exports[0]!.description).toBe("opened default-in-clear tls=false");
      } finally {
        await srv.stop();
      }
    });
  });

  describe("startup: credentials are read at start, errors are one line", () => {
    const fails = async (args: string[], pattern: RegExp, env?: NodeJS.ProcessEnv) => {
      const r = await runCli(["-f", "-U", join(keys.dir, "never.sock"), ...args, "memory", "1M"], { timeoutMs: 20_000, env });
      expect(r.code, r.stderr).toBe(1);
      if (isNbdstate) {
        const lines = r.stderr.trim().split("\n");
        expect(lines, r.stderr).toHaveLength(1);
        expect(lines[0]).toMatch(pattern);
      }
    };

    it("a certificates directory missing server-key.pem", async () => {
      const d = join(keys.dir, "incomplete");
      mkdirSync(d, { recursive: true });
      copyFileSync(join(keys.server, "ca-cert.pem"), join(d, "ca-cert.pem"));
      copyFileSync(join(keys.server, "server-cert.pem"), join(d, "server-cert.pem"));
      await fails(["--tls=require", `--tls-certificates=${d}`], /^nbdstate: error: --tls-certificates: cannot read .*server-key\.pem: no such file$/);
    });

    // nbdkit only warns for --tls=on (and serves without TLS); nbdstate
    // refuses to start: a TLS setup that silently is not there is a trap.
    it("a certificates directory that does not exist", async () => {
      await fails([isNbdkit ? "--tls=require" : "--tls=on", `--tls-certificates=${join(keys.dir, "nowhere")}`], /^nbdstate: error: --tls-certificates: cannot read .*ca-cert\.pem: no such file$/);
    });

    it("a malformed server key", async () => {
      const d = join(keys.dir, "badkey");
      mkdirSync(d, { recursive: true });
      for (const f of ["ca-cert.pem", "server-cert.pem"]) copyFileSync(join(keys.server, f), join(d, f));
      writeFileSync(join(d, "server-key.pem"), "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n");
      await fails(["--tls=require", `--tls-certificates=${d}`], /^nbdstate: error: --tls-certificates: .*server-key\.pem: /);
    });

    it("a PSK file that does not exist, or is malformed", async () => {
      await fails(["--tls=require", `--tls-psk=${join(keys.dir, "missing.psk")}`], /^nbdstate: error: --tls-psk: cannot read .*missing\.psk: no such file$/);
      const bad = join(keys.dir, "bad.psk");
      writeFileSync(bad, "alice-without-a-key\n");
      await fails(["--tls=require", `--tls-psk=${bad}`], /^nbdstate: error: --tls-psk: .*bad\.psk:1: expected "username:hexkey"$/);
    });

    it("--tls=require with no certificates anywhere", async () => {
      const home = join(keys.dir, "emptyhome");
      mkdirSync(home, { recursive: true });
      await fails(["--tls=require"], /^nbdstate: error: --tls=require but no certificates were found/, { ...process.env, HOME: home });
    });

    it.skipIf(isNbdkit)("--run gets an nbds+unix:// $uri and $tls=2 with --tls=require", async () => {
      const r = await runCli(["--tls=require", `--tls-psk=${keys.psk}`, "--run", 'echo "$uri $tls"', "memory", "1M"], { timeoutMs: 20_000 });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout.trim()).toMatch(/^nbds\+unix:\/\/\?socket=\S+ 2$/);
    });
  });
});
