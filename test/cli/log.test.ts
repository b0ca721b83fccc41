// --log=stderr|syslog|null: where error lines go (the plugin's
// ServerServices.log lines, startup errors), as nbdkit; debug lines stay on
// stderr. syslog is checked against a datagram socket this test owns
// (NBDSTATE_SYSLOG_SOCKET points the server at it).
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { syslogMessage, syslogSink, syslogTimestamp, type LogSink } from "../../src/cli/log.js";
import { UnixDgramSocket } from "../../src/sys/unix-dgram.js";
import { makeTmpDir, NBDSTATE_BIN, run } from "../helpers/server.js";
import { requireTools, TOOLS } from "../helpers/tools.js";

const ok = requireTools([TOOLS.nbdinfo, TOOLS.nbdkit]);
const cli = (args: string[], env: NodeJS.ProcessEnv = process.env) =>
  run(process.execPath, [NBDSTATE_BIN, ...args], { timeoutMs: 20_000, env });

/** A plugin that logs one line (ServerServices.log, nbdkit_error's kin) per open. */
function loggingPlugin(): string {
  const file = join(makeTmpDir(), "logs.mjs");
  writeFileSync(
    file,
    `let server;
export default {
  name: "logs",
  afterFork(s) { server = s; },
  open(readonly, exportName) { server.log("logs: opened " + JSON.stringify(exportName)); return {}; },
  getSize() { return 4096; },
  pread(h, buf) { buf.fill(0); },
};
`,
  );
  return file;
}

/** A datagram socket of the test's own, standing in for /dev/log. */
function fakeDevLog() {
  const path = join(makeTmpDir(), "log");
  const sock = new UnixDgramSocket();
  sock.bind(path);
  const got: string[] = [];
  const drain = () => {
    for (let m = sock.receive(); m; m = sock.receive()) got.push(m.toString("utf8"));
  };
  const timer = setInterval(drain, 10);
  return {
    path,
    got,
    close: () => {
      clearInterval(timer);
      sock.close();
    },
  };
}

const closers: Array<() => void> = [];
afterEach(() => {
  for (const c of closers.splice(0)) c();
});

describe.skipIf(!ok)("--log", () => {
  it("--log=null: a line the plugin logs is printed nowhere; the client is served", async () => {
    const plugin = loggingPlugin();
    const r = await cli(["--log=null", "-U", "-", "--run", "nbdinfo --size $uri", plugin]);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe("4096");
    expect(r.stderr).toBe("");
  });

  it("--log=stderr (the default in the foreground): the same line on stderr", async () => {
    const plugin = loggingPlugin();
    for (const args of [["--log=stderr"], []]) {
      const r = await cli([...args, "-U", "-", "--run", "nbdinfo --size $uri", plugin]);
      expect(r.code).toBe(0);
      expect(r.stderr).toBe('nbdstate: logs: opened ""\n');
    }
  });

  it("--log=null hides startup errors too, as nbdkit (exit status 1 all the same)", async () => {
    const r = await cli(["-f", "--log=null", "memory", "size=foo"]);
    const kit = await run("nbdkit", ["-f", "--log=null", "memory", "size=foo"]);
    expect([r.code, r.stderr]).toEqual([1, ""]);
    expect([kit.code, kit.stderr]).toEqual([1, ""]);
  });

  it("--log=null in the background: the parent relays the child's startup error nowhere", async () => {
    const r = await cli(["--log=null", "-U", join(makeTmpDir(), "s.sock"), "memory", "size=foo"]);
    expect([r.code, r.stderr]).toEqual([1, ""]);
  });

  it("--log=syslog: the plugin's line reaches the syslog socket as RFC 3164 '<27>TIMESTAMP nbdstate[PID]: ...', not stderr", async () => {
    const dev = fakeDevLog();
    closers.push(dev.close);
    const plugin = loggingPlugin();
    const r = await cli(["--log=syslog", "-U", "-", "--run", "nbdinfo --size $uri", plugin], { ...process.env, NBDSTATE_SYSLOG_SOCKET: dev.path });
    expect(r.code).toBe(0);
    expect(r.stderr).toBe("");
    await new Promise((res) => setTimeout(res, 100));
    expect(dev.got).toHaveLength(1);
    // daemon facility (3) * 8 + LOG_ERR (3) = 27
    expect(dev.got[0]).toMatch(/^<27>[A-Z][a-z]{2} [ 123][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2} nbdstate\[[0-9]+\]: logs: opened ""$/);
  });

  it("--log=syslog: a startup error goes to syslog too", async () => {
    const dev = fakeDevLog();
    closers.push(dev.close);
    const r = await cli(["-f", "--log=syslog", "memory", "size=foo"], { ...process.env, NBDSTATE_SYSLOG_SOCKET: dev.path });
    expect([r.code, r.stderr]).toEqual([1, ""]);
    await new Promise((res) => setTimeout(res, 100));
    expect(dev.got.map((m) => m.replace(/^<27>.{15} nbdstate\[[0-9]+\]: /, ""))).toEqual([
      "error: memory: size: could not parse size string 'foo'",
    ]);
  });

  it("--log=syslog without a syslog socket: one warning, then the messages on stderr (never lost)", async () => {
    const missing = join(makeTmpDir(), "no-log");
    const r = await cli(["-f", "--log=syslog", "memory", "size=foo"], { ...process.env, NBDSTATE_SYSLOG_SOCKET: missing });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `nbdstate: warning: --log=syslog: ${missing}: No such file or directory: messages go to stderr instead\n` +
        "nbdstate: error: memory: size: could not parse size string 'foo'\n",
    );
  });

  it("-v debug lines stay on stderr under --log=syslog and --log=null (as nbdkit)", async () => {
    const r = await cli(["-v", "--log=null", "-U", "-", "--run", "true", "memory", "1M"]);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("nbdstate: debug: listening: nbd+unix:///?socket=");
  });
});

describe("syslog messages", () => {
  it("format as glibc's syslog(3): <PRI>Mmm dd hh:mm:ss nbdstate[PID]: MSG, one line", () => {
    const d = new Date(2024, 0, 5, 7, 8, 9);
    expect(syslogTimestamp(d)).toBe("Jan  5 07:08:09");
    expect(syslogMessage("warning", "a\nb", 42, d).toString()).toBe("<28>Jan  5 07:08:09 nbdstate[42]: a b");
    expect(syslogMessage("debug", "x", 1, d).toString()).toMatch(/^<31>/);
    expect(syslogMessage("error", "y".repeat(20000), 1, d).length).toBe(8192);
  });

  it("a sink whose datagram socket cannot be made falls back to stderr after one warning", async () => {
    const lines: string[] = [];
    const fallback: LogSink = { write: (_l, line) => void lines.push(line), close: () => {} };
    const sink = await syslogSink({ fallback, makeSocket: () => Promise.reject(new Error("no addon for this platform")) });
    sink.write("error", "error: one");
    sink.write("error", "error: two");
    expect(lines).toEqual([
      "warning: --log=syslog: cannot make a unix datagram socket (no addon for this platform): messages go to stderr instead",
      "error: one",
      "error: two",
    ]);
  });
});
