// nbdkit's smaller options as nbdstate takes them: --no-sr, --no-mc,
// --mask-handshake, --keepalive, --timeout (parsed and handed to the server
// actor), --short-options / --long-options (compared with nbdkit's lists),
// and -D debug flags that change what is printed.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseArgs } from "../../src/cli/args.js";
import { debugSettings, parseDebugFlag } from "../../src/cli/debug-flags.js";
import { serverOptions } from "../../src/cli/main.js";
import type { TlsSetup } from "../../src/cli/tls.js";
import { makeTmpDir, NBDSTATE_BIN, run } from "../helpers/server.js";
import { hasTool, requireTools, TOOLS } from "../helpers/tools.js";

const cli = (args: string[]) => run(process.execPath, [NBDSTATE_BIN, ...args], { timeoutMs: 20_000 });
const noTls = { mode: "off" } as TlsSetup;

describe("--no-sr, --no-mc, --mask-handshake, --keepalive, --timeout", () => {
  it("parse with nbdkit's spellings", () => {
    expect(parseArgs(["--no-sr", "--no-mc", "null"])).toMatchObject({ noStructuredReplies: true, noMetaContexts: true });
    expect(parseArgs(["--no-structured-replies", "--no-meta-contexts", "null"])).toMatchObject({ noStructuredReplies: true, noMetaContexts: true });
    expect(parseArgs(["null"])).toMatchObject({ noStructuredReplies: false, noMetaContexts: false, keepalive: false });
    expect(parseArgs(["--mask-handshake=0", "null"]).maskHandshake).toBe(0);
    expect(parseArgs(["--mask-handshake", "0x1", "null"]).maskHandshake).toBe(1);
    expect(parseArgs(["--mask-handshake=02", "null"]).maskHandshake).toBe(2);
    expect(() => parseArgs(["--mask-handshake=-1", "null"])).toThrow("mask-handshake: negative numbers are not allowed");
    expect(() => parseArgs(["--mask-handshake=x", "null"])).toThrow('mask-handshake: could not parse number: "x"');
    expect(parseArgs(["--keepalive", "--timeout=30", "null"])).toMatchObject({ keepalive: true, timeout: 30 });
    expect(parseArgs(["null"]).timeout).toBeUndefined();
  });

  it("reach the server actor's options (the lead's negotiation acts on them)", () => {
    const a = parseArgs(["--no-sr", "--no-mc", "--mask-handshake=1", "--timeout=7", "-r", "-t", "4", "null"]);
    expect(serverOptions(a, [], noTls, () => {})).toMatchObject({
      noStructuredReplies: true,
      noMetaContexts: true,
      maskHandshake: 1,
      handshakeTimeoutMs: 7000,
      optionTimeoutMs: 7000,
      readonly: true,
      threads: 4,
    });
    const plain = serverOptions(parseArgs(["null"]), [], noTls, () => {});
    expect(plain.noStructuredReplies).toBeUndefined();
    expect(plain.maskHandshake).toBeUndefined();
    expect(plain.handshakeTimeoutMs).toBeUndefined();
    // --timeout=0: no limit (the negotiation skips a timer of 0).
    expect(serverOptions(parseArgs(["--timeout=0", "null"]), [], noTls, () => {}).handshakeTimeoutMs).toBe(0);
  });
});

const lines = (s: string) => s.split("\n").filter((l) => l !== "");

describe.skipIf(!requireTools([TOOLS.nbdkit]))("--short-options / --long-options (bash completion)", () => {
  // Options nbdkit 1.32 has that nbdstate refuses, and ours that it lacks (newer nbdkit's, or nbdstate's own).
  const REFUSED = ["-g", "-o", "-u", "--group", "--old-style", "--oldstyle", "--selinux-label", "--swap", "--user", "--vsock"];
  const OURS = ["--check", "--inspect", "--status-page", "--keepalive", "--timeout", "--no-mc", "--no-meta-contexts", "--no-structured-replies", "--experimental-list-hier", "--workers"];

  for (const which of ["short", "long"] as const) {
    it(`--${which}-options: one a line, nbdkit's list less what nbdstate refuses, plus its own`, async () => {
      const ours = await cli([`--${which}-options`]);
      const kit = await run("nbdkit", [`--${which}-options`]);
      expect(ours.code).toBe(0);
      expect(ours.stderr).toBe("");
      const mine = lines(ours.stdout);
      const theirs = lines(kit.stdout);
      expect(new Set(mine).size).toBe(mine.length);
      expect(mine.filter((o) => !theirs.includes(o)).sort()).toEqual(which === "long" ? [...OURS].sort() : []);
      expect(theirs.filter((o) => !mine.includes(o)).sort()).toEqual(REFUSED.filter((o) => o.startsWith("--") === (which === "long")).sort());
    });
  }
});

describe("-D debug flags", () => {
  it("parse as nbdkit's NAME.FLAG=N (N an integer)", () => {
    expect(parseDebugFlag("nbdkit.backend.datapath=0")).toEqual({ name: "nbdkit", flag: "backend.datapath", value: 0 });
    expect(parseDebugFlag("memory.x=0x10")).toEqual({ name: "memory", flag: "x", value: 16 });
    for (const bad of ["x=1", "x.=1", ".y=1", "x.y=", "x.y=z"]) {
      expect(() => parseDebugFlag(bad)).toThrow("-D (Debug Flag) must have the format NAME.FLAG=N");
    }
  });

  it("areas print with -v unless set to 0, and without -v when set to 1", () => {
    const s = (f: string[], v: boolean) => debugSettings(f.map(parseDebugFlag), v);
    expect(s([], true).enabled("backend")).toBe(true);
    expect(s([], false).enabled("server")).toBe(false);
    expect(s(["nbdstate.backend=0"], true).enabled("backend")).toBe(false);
    expect(s(["nbdkit.backend.controlpath=0"], true).enabled("backend")).toBe(false);
    expect(s(["nbdstate.server=1"], false).enabled("server")).toBe(true);
    expect(s(["nbdstate.server=1"], false).enabled("backend")).toBe(false);
    expect(s(["nbdstate.nope=1"], false).warnings).toEqual([
      "-D nbdstate.nope: no such server debug flag (known: backend, backend.controlpath, backend.datapath, server, environ)",
    ]);
  });

  it("-D nbdstate.server=1 without -v: the server's lines only (listening), not the stack's (config)", async () => {
    const r = await cli(["-D", "nbdstate.server=1", "-U", "-", "--run", "true", "memory", "1M"]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/^nbdstate: debug: listening: nbd\+unix:\/\/\/\?socket=\/[^%]*$/m);
    expect(r.stderr).not.toContain("config key=");
  });

  it("-v -D nbdkit.backend.controlpath=0: -v without the stack's lines", async () => {
    const on = await cli(["-v", "-U", "-", "--run", "true", "memory", "1M"]);
    expect(on.stderr).toContain("nbdstate: debug: config key=size, value=1M");
    const off = await cli(["-v", "-D", "nbdkit.backend.controlpath=0", "-U", "-", "--run", "true", "memory", "1M"]);
    expect(off.code).toBe(0);
    expect(off.stderr).not.toContain("config key=");
    expect(off.stderr).toContain("nbdstate: debug: listening:");
  });

  it("-D nbdstate.environ=1 prints the environment", async () => {
    const r = await run(process.execPath, [NBDSTATE_BIN, "-D", "nbdstate.environ=1", "-U", "-", "--run", "true", "memory", "1M"], {
      env: { ...process.env, NBDSTATE_TEST_MARK: "x y" },
    });
    expect(r.stderr).toContain("nbdstate: debug: environ: NBDSTATE_TEST_MARK=x y\n");
  });

  it("-D PLUGIN.FLAG=N sets the FLAG of the module's exported debugFlags before load; unknown ones warn as nbdkit", async () => {
    const file = join(makeTmpDir(), "flags.mjs");
    writeFileSync(
      file,
      `export const debugFlags = { big: 0 };
let sizeAtLoad;
export default { name: "flags", load() { sizeAtLoad = debugFlags.big ? 8192 : 4096; }, open() { return {}; }, getSize() { return sizeAtLoad; }, pread(h, b) { b.fill(0); } };
`,
    );
    const size = async (extra: string[]) => {
      const r = await cli([...extra, "-U", "-", "--run", "nbdinfo --size $uri", file]);
      return { size: r.stdout.trim(), stderr: r.stderr };
    };
    if (!hasTool("nbdinfo")) return void console.warn("SKIP: nbdinfo (libnbd-bin) not installed");
    expect(await size([])).toEqual({ size: "4096", stderr: "" });
    expect(await size(["-D", "flags.big=1"])).toEqual({ size: "8192", stderr: "" });
    expect(await size(["-D", "flags.small=1"])).toEqual({
      size: "4096",
      stderr: "nbdstate: warning: -D flags.small: flags has no debug flag called small (its module exports no debugFlags.small)\n",
    });
    expect((await size(["-D", "other.x=1"])).stderr).toBe(
      "nbdstate: warning: debug flag -D other.x was not used (no plugin or filter is called other)\n",
    );
  });
});
