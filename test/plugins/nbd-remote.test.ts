// The nbd plugin to upstreams elsewhere: TLS (X.509 and PSK) to nbdkit and
// to another nbdstate, nbds:// and nbds+unix:// URIs, uri= with export=
// (nbdkit's rule, compared with nbdkit's nbd plugin), the upstream export's
// description and block sizes passed through, and multi-conn end to end
// through a chain of nbdstate proxies.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makePki, type TestPki } from "../helpers/certs.js";
import {
  canConnect, freePort, isNbdkit, makeTmpDir, removeTmpDir, run, runOk, sleep, startServer, startTcpServer, type RunningServer,
} from "../helpers/server.js";
import { PYTHON, requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";
import { startNbdkitAt, type Upstream } from "../helpers/upstream.js";

const MiB = 1 << 20;
const tools = requireTools([TOOLS.nbdkit, TOOLS.nbdinfo, TOOLS.nbdcopy, TOOLS.qemuImg, ["certtool", "gnutls-bin"], ["psktool", "gnutls-bin"]]);
const python = requirePythonLibnbd();

interface TcpNbdkit {
  port: number;
  stop(): Promise<void>;
}
const live = new Set<ChildProcess>();
process.on("exit", () => {
  for (const c of live) c.kill("SIGKILL");
});
/** nbdkit on a loopback TCP port (TLS tests need TCP for host names). */
async function nbdkitTcp(args: string[]): Promise<TcpNbdkit> {
  const port = await freePort();
  const child = spawn("nbdkit", ["-f", "-p", String(port), "-i", "127.0.0.1", ...args], { stdio: ["ignore", "ignore", "pipe"] });
  live.add(child);
  let err = "";
  let exited = false;
  child.stderr!.setEncoding("utf8").on("data", (s: string) => (err += s));
  const exit = new Promise<void>((r) => child.on("exit", () => ((exited = true), live.delete(child), r())));
  const deadline = Date.now() + 10_000;
  while (!(await canConnect({ host: "127.0.0.1", port }))) {
    if (exited || Date.now() > deadline) throw new Error(`nbdkit ${args.join(" ")} did not start:\n${err}`);
    await sleep(25);
  }
  return {
    port,
    async stop() {
      if (!exited) child.kill("SIGTERM");
      await exit;
    },
  };
}

function exportInfo(json: string): Record<string, unknown> {
  return JSON.parse(json).exports[0];
}

describe.skipIf(isNbdkit || !tools || !python)("nbd plugin: TLS, URIs, descriptions, block sizes, multi-conn chains", () => {
  let pki: TestPki;
  let dir: string;
  let image: Buffer;
  const stops: { stop(): Promise<unknown> }[] = [];
  beforeAll(() => {
    pki = makePki();
    dir = makeTmpDir("nbdremote-");
    image = randomBytes(2 * MiB);
    writeFileSync(join(dir, "image.raw"), image);
  });
  afterAll(async () => {
    for (const s of stops.reverse()) await s.stop().catch(() => {});
    removeTmpDir(dir);
    removeTmpDir(pki.dir);
  });
  async function proxy(args: string[], opts: string[] = []): Promise<RunningServer> {
    const s = await startServer([...opts, "nbd", ...args]);
    stops.push(s);
    return s;
  }
  let n = 0;
  async function kitUnix(args: string[]): Promise<Upstream> {
    const u = await startNbdkitAt(join(dir, `k${n++}.sock`), args);
    stops.push(u);
    return u;
  }
  async function kitTcp(args: string[]): Promise<TcpNbdkit> {
    const k = await nbdkitTcp(args);
    stops.push(k);
    return k;
  }
  async function roundTrip(uri: string): Promise<void> {
    await runOk("nbdcopy", [join(dir, "image.raw"), uri], { timeoutMs: 60_000 });
    const out = join(dir, `back${n++}.raw`);
    await runOk("nbdcopy", [uri, out], { timeoutMs: 60_000 });
    expect(readFileSync(out).equals(image)).toBe(true);
  }
  async function refused(s: RunningServer, pattern: RegExp): Promise<void> {
    const r = await run("nbdinfo", ["--size", s.uri], { timeoutMs: 30_000 });
    expect(r.code, `nbdinfo should fail; proxy stderr: ${s.stderr}`).not.toBe(0);
    expect(r.stderr + s.stderr).toMatch(pattern);
  }

  it("X.509 to nbdkit --tls=require: hostname=/port= with tls=require, nbds:// and nbds+unix:// URIs; the wrong CA is refused unless tls-verify=false", async () => {
    const up = await kitTcp(["--tls=require", `--tls-certificates=${pki.server}`, "memory", "2M"]);
    const a = await proxy(["hostname=localhost", `port=${up.port}`, "tls=require", `tls-certificates=${pki.client}`]);
    await roundTrip(a.uri);
    const b = await proxy([`nbds://127.0.0.1:${up.port}/`, `tls-certificates=${pki.client}`]);
    expect((await runOk("nbdinfo", ["--size", b.uri])).stdout.trim()).toBe(String(2 * MiB));
    const upUnix = await kitUnix(["--tls=require", `--tls-certificates=${pki.server}`, "memory", "1M"]);
    const c = await proxy([`nbds+unix:///?socket=${upUnix.sock}&tls-certificates=${pki.client}`]);
    expect((await runOk("nbdinfo", ["--size", c.uri])).stdout.trim()).toBe(String(MiB));

    const wrongCa = await proxy(["hostname=localhost", `port=${up.port}`, "tls=require", `tls-certificates=${pki.otherCa}`]);
    await refused(wrongCa, /TLS handshake with the server failed: .*(certificate|issuer)/i);
    const noVerify = await proxy(["hostname=localhost", `port=${up.port}`, "tls=require", `tls-certificates=${pki.otherCa}`, "tls-verify=false"]);
    expect((await runOk("nbdinfo", ["--size", noVerify.uri])).stdout.trim()).toBe(String(2 * MiB));
    // The export named in an nbds:// URI is the one opened.
    const named = await kitTcp(["--tls=require", `--tls-certificates=${pki.server}`, "info", "mode=exportname"]);
    const d = await proxy([`nbds://localhost:${named.port}/vm%201`, `tls-certificates=${pki.client}`]);
    expect((await runOk("nbdcopy", [d.uri, "-"])).stdoutBuf.toString("latin1").replace(/\0+$/, "")).toBe("vm 1");
    // Plaintext to a server that requires TLS fails (its refusal reaches our log).
    const plain = await proxy(["hostname=localhost", `port=${up.port}`]);
    await refused(plain, /nbd: cannot connect/);
  });

  it("tls=on falls back to plaintext when the upstream has no TLS; tls=require does not", async () => {
    const up = await kitUnix(["memory", "1M"]);
    const on = await proxy([`socket=${up.sock}`, "tls=on"]);
    expect((await runOk("nbdinfo", ["--size", on.uri])).stdout.trim()).toBe(String(MiB));
    const req = await proxy([`socket=${up.sock}`, "tls=require"]);
    await refused(req, /TLS required|refused TLS/);
  });

  it("PSK to nbdkit --tls-psk: tls-psk= with tls-username=; an unknown user is a startup error", async () => {
    const up = await kitUnix(["--tls=require", `--tls-psk=${pki.psk}`, "memory", "2M"]);
    const s = await proxy([`socket=${up.sock}`, `tls-psk=${pki.psk}`, "tls-username=alice"]);
    await roundTrip(s.uri);
    const bad = await run(process.execPath, [join(process.cwd(), "bin", "nbdstate.js"), "-U", "-", "nbd", `socket=${up.sock}`, `tls-psk=${pki.psk}`, "tls-username=bob", "--run", "true"], { timeoutMs: 20_000 });
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/no key for user 'bob'/);
  });

  it("a chain of nbdstate proxies with TLS between them (nbdstate --tls server, nbdstate nbd client) carries every byte, and multi-conn end to end", async () => {
    const up = await kitUnix(["memory", "2M"]);
    const middle = await startTcpServer(["--tls=require", `--tls-certificates=${pki.server}`, "nbd", `socket=${up.sock}`]);
    stops.push(middle);
    const top = await proxy(["hostname=localhost", `port=${middle.port}`, `tls-certificates=${pki.client}`, "tls=require"]);
    await roundTrip(top.uri);
    const q = join(dir, "chain-qemu.raw");
    await runOk("qemu-img", ["convert", "-f", "raw", "-O", "raw", top.uri, q], { timeoutMs: 60_000 });
    expect(readFileSync(q).equals(image)).toBe(true);
    expect(exportInfo((await runOk("nbdinfo", ["--json", top.uri])).stdout).can_multi_conn).toBe(true);
    // A write on one connection to the top, flushed, is read on another.
    const script = `import sys, nbd
a = nbd.NBD(); a.connect_uri(sys.argv[1]); b = nbd.NBD(); b.connect_uri(sys.argv[1])
assert a.can_multi_conn() and b.can_multi_conn()
a.pwrite(b"\\xc3" * 65536, 1 << 20); a.flush()
assert b.pread(65536, 1 << 20) == b"\\xc3" * 65536
print("OK")`;
    expect((await runOk(PYTHON, ["-c", script, top.uri])).stdout.trim()).toBe("OK");
  });

  it("multi-conn through the chain is what the upstream says; shared=true makes it true", async () => {
    const up = await kitUnix(["--filter=multi-conn", "memory", "1M", "multi-conn-mode=disable"]);
    const p1 = await proxy([`socket=${up.sock}`]);
    const p2 = await proxy([`socket=${p1.sock}`]);
    expect(exportInfo((await runOk("nbdinfo", ["--json", p2.uri])).stdout).can_multi_conn).toBe(false);
    const kit = await kitUnix(["nbd", `socket=${up.sock}`]);
    expect(exportInfo((await runOk("nbdinfo", ["--json", `nbd+unix:///?socket=${kit.sock}`])).stdout).can_multi_conn).toBe(false);
    const sharedP = await proxy([`socket=${up.sock}`, "shared=true"]);
    const p3 = await proxy([`socket=${sharedP.sock}`]);
    expect(exportInfo((await runOk("nbdinfo", ["--json", p3.uri])).stdout).can_multi_conn).toBe(true);
  });

  it("uri= with export=: the URI's export wins, as nbdkit (a warning says export= is ignored)", async () => {
    const up = await kitUnix(["info", "mode=exportname"]);
    const content = async (uri: string) => (await runOk("nbdcopy", [uri, "-"])).stdoutBuf.toString("latin1").replace(/\0+$/, "");
    for (const [uriExport, param] of [["a", "b"], ["", "b"], ["a", undefined]] as const) {
      const args = [`uri=nbd+unix:///${uriExport}?socket=${up.sock}`, ...(param ? [`export=${param}`] : [])];
      const ours = await proxy(args);
      const kit = await kitUnix(["nbd", ...args]);
      const want = await content(`nbd+unix:///?socket=${kit.sock}`);
      expect(await content(ours.uri)).toBe(want);
      expect(want).toBe(uriExport);
      if (param) expect(ours.stderr).toMatch(new RegExp(`export=${param} is ignored: the URI names export '${uriExport}'`));
    }
  });

  it("the upstream export's description and block sizes pass through (export=NAME), in GO and in the listing, as nbdkit's nbd plugin", async () => {
    const up = await kitUnix(["--filter=exportname", "--filter=blocksize-policy", "memory", "1M",
      "exportdesc=fixed:lab disk", "blocksize-minimum=4096", "blocksize-preferred=65536", "blocksize-maximum=1M"]);
    const ours = await proxy([`socket=${up.sock}`, "export=disk1"]);
    const kit = await kitUnix(["nbd", `socket=${up.sock}`, "export=disk1"]);
    const pick = (e: Record<string, unknown>) => ({
      description: e.description, min: e.block_size_minimum, pref: e.block_size_preferred, max: e.block_size_maximum,
    });
    const mine = pick(exportInfo((await runOk("nbdinfo", ["--json", ours.uri])).stdout));
    expect(mine).toEqual({ description: "lab disk", min: 4096, pref: 65536, max: MiB });
    expect(mine).toEqual(pick(exportInfo((await runOk("nbdinfo", ["--json", `nbd+unix:///?socket=${kit.sock}`])).stdout)));
    const list = await runOk("nbdinfo", ["--list", "--json", ours.uri]);
    expect(exportInfo(list.stdout).description).toBe("lab disk");
  });
});
