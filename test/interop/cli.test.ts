// The command line, nbdkit's: --version, --help, PLUGIN --help,
// --dump-plugin, one-line errors with exit status 1, captive mode (--run),
// -r, size suffixes, TCP (-p/-i), private sockets (-U -), -s (stdin/stdout),
// socket activation, -P pidfile and background mode (no -f).
//
// Assertions hold for nbdkit 1.32 too, except those marked NBDSTATE-ONLY
// (skipped when NBDSTATE_TEST_SERVER=nbdkit).
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";
import {
  REPO_ROOT,
  SERVER_NAME,
  canConnect,
  isNbdkit,
  isNbdstate,
  makeTmpDir,
  pidAlive,
  pidGone,
  removeTmpDir,
  run,
  runCli,
  runOk,
  serverArgv,
  startServer,
  startTcpServer,
  waitFor,
  type RunResult,
} from "../helpers/server.js";
import { pythonOk } from "../helpers/python.js";

const ok = requireTools([TOOLS.nbdinfo]) && requirePythonLibnbd();
const MiB = 1 << 20;

const lines = (s: string) => s.split("\n").filter((l) => l.trim() !== "");

/**
 * A command-line error: exit status 1 and exactly one line on stderr,
 * "<server>: error: ..." naming the culprit, as nbdkit words it.
 * nbdkit prints a second hint line for some errors ("Use 'nbdkit --help'
 * ..."), so against nbdkit only the first line counts.
 */
function expectOneLineError(r: RunResult, mentions: RegExp): void {
  expect(r.code, `stderr: ${r.stderr}`).toBe(1);
  const ls = lines(r.stderr);
  if (isNbdstate) expect(ls, "exactly one line on stderr").toHaveLength(1);
  else expect(ls.length).toBeGreaterThanOrEqual(1);
  expect(ls[0]).toMatch(new RegExp(`^${SERVER_NAME}: error: `));
  expect(ls[0]).toMatch(mentions);
}

describe.skipIf(!ok)(`command line of ${SERVER_NAME}`, () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!();
  });

  describe("information", () => {
    it("--version: exit 0, '<name> X.Y.Z' on the first line", async () => {
      const r = await runCli(["--version"]);
      expect(r.code).toBe(0);
      expect(lines(r.stdout)[0]).toMatch(new RegExp(`^${SERVER_NAME} \\d+\\.\\d+\\.\\d+`));
    });

    it.skipIf(isNbdkit)("NBDSTATE-ONLY: --version prints the package.json version", async () => {
      const pkg = JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as { version: string };
      const r = await runCli(["--version"]);
      expect(lines(r.stdout)[0]).toBe(`nbdstate ${pkg.version}`);
    });

    it("--help: exit 0, usage naming PLUGIN and the main options", async () => {
      const r = await runCli(["--help"]);
      expect(r.code).toBe(0);
      for (const opt of ["PLUGIN", "--filter", "--run", "-U", "-r", "--readonly", "-f", "--foreground", "-p", "--port", "-P", "--pidfile", "-s", "--single", "-i", "--ipaddr"]) {
        expect(r.stdout, `help mentions ${opt}`).toContain(opt);
      }
    });

    it("memory --help: exit 0, includes the plugin's own help (size=)", async () => {
      const r = await runCli(["memory", "--help"]);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/size=/);
      expect(r.stdout).toMatch(/memory/);
    });

    it("--dump-plugin memory: exit 0, key=value lines with name=memory and magic_config_key=size", async () => {
      const r = await runCli(["--dump-plugin", "memory"]);
      expect(r.code, r.stderr).toBe(0);
      const ls = lines(r.stdout);
      expect(ls.length).toBeGreaterThan(2);
      for (const l of ls) expect(l).toMatch(/^[A-Za-z0-9_.-]+=/);
      expect(ls).toContain("name=memory");
      expect(ls).toContain("magic_config_key=size");
      // "memory --dump-plugin" is the same thing
      const r2 = await runCli(["memory", "--dump-plugin"]);
      expect(r2.code).toBe(0);
      expect(lines(r2.stdout)).toContain("name=memory");
    });
  });

  describe("errors: exit 1, one line on stderr", () => {
    it("unknown plugin", async () => {
      expectOneLineError(await runCli(["-U", "-", "--run", "true", "nosuchplugin"]), /nosuchplugin/);
    });
    it("unknown filter", async () => {
      expectOneLineError(await runCli(["-U", "-", "--run", "true", "--filter=nosuchfilter", "memory", "1M"]), /nosuchfilter/);
    });
    it("unknown parameter", async () => {
      expectOneLineError(await runCli(["-U", "-", "--run", "true", "memory", "1M", "bogus=1"]), /bogus/);
    });
    it("bad size value (unknown suffix)", async () => {
      expectOneLineError(await runCli(["-U", "-", "--run", "true", "memory", "size=12Q"]), /size|Q/);
    });
    it("bad size value (not a number)", async () => {
      expectOneLineError(await runCli(["-U", "-", "--run", "true", "memory", "size=abc"]), /size|abc/);
    });
    it("missing required size", async () => {
      expectOneLineError(await runCli(["-U", "-", "--run", "true", "memory"]), /size/);
    });
  });

  describe("captive mode (--run) and private sockets (-U -)", () => {
    it("--run 'nbdinfo --size $uri': the command talks to the server, its status is the exit status", async () => {
      const r = await runCli(["-U", "-", "--run", "nbdinfo --size $uri", "memory", "1M"]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout.trim()).toBe(String(MiB));
    });

    it("--run exits with the command's status (3), and with 1 for false", async () => {
      const r = await runCli(["-U", "-", "--run", "nbdinfo $uri >/dev/null && exit 3", "memory", "1M"]);
      expect(r.code).toBe(3);
      const f = await runCli(["-U", "-", "--run", "false", "memory", "1M"]);
      expect(f.code).toBe(1);
    });

    it("-U - --run: $unixsocket is a unix socket in a private directory, $uri names it", async () => {
      const r = await runCli(["-U", "-", "--run", 'test -S "$unixsocket" && echo "$unixsocket" && echo "$uri"', "memory", "1M"]);
      expect(r.code, r.stderr).toBe(0);
      const [sockPath, uri] = lines(r.stdout);
      expect(sockPath).toMatch(/^\//);
      expect(uri).toMatch(/^nbd\+unix:\/\/\/?\?socket=/);
      expect(uri).toContain(sockPath);
    });

    it("-r: nbdinfo --can write says no (status 2, passed through --run)", async () => {
      const r = await runCli(["-U", "-", "-r", "--run", "nbdinfo --can write $uri", "memory", "1M"]);
      expect(r.code).toBe(2);
      const w = await runCli(["-U", "-", "--run", "nbdinfo --can write $uri", "memory", "1M"]);
      expect(w.code).toBe(0);
    });

    it("size suffixes: 1G, 1g, 512K, 512k, 1M, 1s (sectors), plain bytes; as size= or the bare magic value", async () => {
      const cases: Array<[string, number]> = [
        ["size=1G", 1024 * MiB],
        ["1g", 1024 * MiB],
        ["size=512K", 512 * 1024],
        ["512k", 512 * 1024],
        ["size=1M", MiB],
        ["size=1s", 512],
        ["size=4096", 4096],
        ["1T", 1024 * 1024 * MiB],
      ];
      const results = await Promise.all(cases.map(([arg]) => runCli(["-U", "-", "--run", "nbdinfo --size $uri", "memory", arg])));
      cases.forEach(([arg, want], i) => {
        const r = results[i]!;
        expect(r.code, `${arg}: ${r.stderr}`).toBe(0);
        expect(r.stdout.trim(), arg).toBe(String(want));
      });
    });
  });

  it("-p PORT -i 127.0.0.1: a TCP listener on loopback", async () => {
    const srv = await startTcpServer(["memory", "1M"]);
    cleanups.push(() => srv.stop().then(() => undefined));
    const r = await runOk("nbdinfo", ["--size", srv.uri]);
    expect(r.stdout.trim()).toBe(String(MiB));
    await pythonOk(
      `
h = connect()
h.pwrite(b"tcp!", 0)
eq(h.pread(4, 0), b"tcp!", "round trip over TCP")
h.shutdown()
print("OK")
`,
      srv.uri,
    );
  });

  it("-s: one connection over stdin/stdout (libnbd connect_command)", async () => {
    const argv = [...serverArgv(), "-s", "memory", "1M"];
    await pythonOk(
      `
import json
h = nbd.NBD()
h.connect_command(json.loads(EXTRA[0]))
eq(h.get_size(), 1024 * 1024, "size over -s")
h.pwrite(b"stdio", 100)
eq(h.pread(5, 100), b"stdio", "round trip over -s")
h.shutdown()
print("OK")
`,
      "unused",
      [JSON.stringify(argv)],
    );
  });

  it("socket activation (LISTEN_FDS): nbdinfo -- [ SERVER memory 1M ]", async () => {
    const r = await runOk("nbdinfo", ["--size", "--", "[", ...serverArgv(), "memory", "1M", "]"]);
    expect(r.stdout.trim()).toBe(String(MiB));
  });

  it("-P PIDFILE (foreground): the file holds the server's pid", async () => {
    const dir = makeTmpDir("pidfile-");
    cleanups.push(() => removeTmpDir(dir));
    const pidfile = join(dir, "server.pid");
    const srv = await startServer(["-P", pidfile, "memory", "1M"]);
    cleanups.push(() => srv.stop().then(() => undefined));
    expect(await waitFor(() => existsSync(pidfile), 5000)).toBe(true);
    expect(readFileSync(pidfile, "utf8").trim()).toBe(String(srv.pid));
  });

  it("background mode (no -f): the parent exits 0 once listening; the daemon serves until killed by pidfile", async () => {
    const dir = makeTmpDir("daemon-");
    const sock = join(dir, "nbd.sock");
    const pidfile = join(dir, "server.pid");
    let daemonPid = 0;
    cleanups.push(async () => {
      if (daemonPid && !pidGone(daemonPid)) {
        process.kill(daemonPid, "SIGKILL");
        await waitFor(() => pidGone(daemonPid), 5000);
      }
      removeTmpDir(dir);
    });
    const started = Date.now();
    const r = await runCli(["-U", sock, "-P", pidfile, "memory", "1M"], { timeoutMs: 20_000, drainMs: 500 });
    expect(r.code, r.stderr).toBe(0);
    expect(Date.now() - started).toBeLessThan(15_000);
    // Listening by the time the parent has exited.
    expect(existsSync(pidfile)).toBe(true);
    daemonPid = Number(readFileSync(pidfile, "utf8").trim());
    expect(daemonPid).toBeGreaterThan(1);
    expect(pidAlive(daemonPid)).toBe(true);
    expect(await canConnect({ path: sock })).toBe(true);
    const info = await runOk("nbdinfo", ["--size", `nbd+unix:///?socket=${sock}`]);
    expect(info.stdout.trim()).toBe(String(MiB));
    // Stop it by the pid in the pidfile.
    process.kill(daemonPid, "SIGTERM");
    expect(await waitFor(() => pidGone(daemonPid), 10_000)).toBe(true);
    expect(await canConnect({ path: sock })).toBe(false);
  });

  it("SIGTERM stops a foreground server cleanly (exit 0, no SIGKILL needed)", async () => {
    const srv = await startServer(["memory", "1M"]);
    const r = await srv.stop();
    expect({ code: r.code, signal: r.signal, killed: r.killed }, `stderr: ${srv.stderr}`).toEqual({ code: 0, signal: null, killed: false });
  });

  it("options after the plugin parameters are accepted too (nbdkit permutes argv)", async () => {
    const r = await runCli(["memory", "1M", "-U", "-", "--run", "nbdinfo --size $uri"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(String(MiB));
  });

  it("the offset and null plugins/filters via the command line: sizes", async () => {
    const a = await runCli(["-U", "-", "--run", "nbdinfo --size $uri", "--filter=offset", "memory", "size=4M", "offset=1M", "range=2M"]);
    expect(a.code, a.stderr).toBe(0);
    expect(a.stdout.trim()).toBe(String(2 * MiB));
    const b = await runCli(["-U", "-", "--run", "nbdinfo --size $uri", "--filter=offset", "memory", "size=4M", "offset=1M"]);
    expect(b.code, b.stderr).toBe(0);
    expect(b.stdout.trim()).toBe(String(3 * MiB));
    const c = await runCli(["-U", "-", "--run", "nbdinfo --size $uri", "null", "size=7M"]);
    expect(c.stdout.trim()).toBe(String(7 * MiB));
  });

  it("a file plugin export of a path (file=PATH): size of the file", async () => {
    const dir = makeTmpDir("file-");
    cleanups.push(() => removeTmpDir(dir));
    const img = join(dir, "disk.img");
    await run("truncate", ["-s", "3M", img]);
    const r = await runCli(["-U", "-", "--run", "nbdinfo --size $uri", "file", `file=${img}`]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(String(3 * MiB));
  });
});
