import { describe, it, expect } from "vitest";
import { DEFAULT_THREADS, OPTIONS, isConfigKey, parseArgs, parseThreads, parseTls } from "../../src/cli/args.js";
import { CliError } from "../../src/cli/errors.js";

const err = (argv: string[]): string => {
  try {
    parseArgs(argv);
  } catch (e) {
    expect(e).toBeInstanceOf(CliError);
    const msg = (e as Error).message;
    expect(msg).not.toContain("\n");
    return msg;
  }
  throw new Error(`parseArgs(${JSON.stringify(argv)}) did not throw`);
};

describe("parseArgs: plugin and parameters", () => {
  it("takes the first operand as PLUGIN and keeps the rest as raw strings", () => {
    const a = parseArgs(["memory", "1M", "allocator=sparse"]);
    expect(a.plugin).toBe("memory");
    expect(a.params).toEqual(["1M", "allocator=sparse"]);
  });

  it("leaves size-like values as strings", () => {
    const a = parseArgs(["memory", "size=1G", "2M"]);
    expect(a.params).toEqual(["size=1G", "2M"]);
    expect(typeof a.params[1]).toBe("string");
  });

  it("accepts options after PLUGIN and between parameters (getopt permutation)", () => {
    const a = parseArgs(["memory", "1M", "-f", "-r", "--port", "10999", "x=y"]);
    expect(a).toMatchObject({ plugin: "memory", params: ["1M", "x=y"], foreground: true, readonly: true, port: 10999 });
  });

  it("stops option parsing at --", () => {
    const a = parseArgs(["-f", "memory", "--", "-r", "--run"]);
    expect(a.readonly).toBe(false);
    expect(a.params).toEqual(["-r", "--run"]);
  });

  it("keeps filters in command-line order, the first given outermost", () => {
    const a = parseArgs(["--filter=cow", "memory", "--filter", "delay", "1M", "--filter=./my-filter.ts"]);
    expect(a.filters).toEqual(["cow", "delay", "./my-filter.ts"]);
  });

  it("accepts a path as PLUGIN", () => {
    expect(parseArgs(["./plugins/my.ts", "a=b"]).plugin).toBe("./plugins/my.ts");
  });
});

describe("parseArgs: options", () => {
  it("has nbdkit's defaults", () => {
    const a = parseArgs(["null"]);
    expect(a).toMatchObject({
      foreground: false, readonly: false, single: false, verbose: false, exitWithParent: false,
      threads: DEFAULT_THREADS, tls: "off", filters: [], debugFlags: [],
    });
    expect(DEFAULT_THREADS).toBe(16);
    expect(a.port).toBeUndefined();
    expect(a.unix).toBeUndefined();
  });

  it("parses every value option, short and long", () => {
    const a = parseArgs([
      "-U", "/tmp/s", "-i", "127.0.0.1", "-P", "/tmp/pid", "-e", "exp", "-t", "4",
      "--run", "nbdinfo $uri", "-D", "nbdkit.backend.datapath=0", "--log=stderr", "--tls=off", "null",
    ]);
    expect(a).toMatchObject({
      unix: "/tmp/s", ipaddr: "127.0.0.1", pidfile: "/tmp/pid", exportName: "exp", threads: 4,
      run: "nbdinfo $uri", debugFlags: [{ name: "nbdkit", flag: "backend.datapath", value: 0 }], log: "stderr", tls: "off",
    });
    const b = parseArgs(["--unix=/s", "--ipaddr=::1", "--pidfile=p", "--exportname=", "--threads=2", "null"]);
    expect(b).toMatchObject({ unix: "/s", ipaddr: "::1", pidfile: "p", exportName: "", threads: 2 });
  });

  it("parses flags and clusters of short flags", () => {
    const a = parseArgs(["-frsvn", "--exit-with-parent", "null"]);
    expect(a).toMatchObject({ foreground: true, readonly: true, single: true, verbose: true, exitWithParent: true });
    expect(parseArgs(["-p10999", "null"]).port).toBe(10999);
    expect(parseArgs(["-rU", "-", "null"])).toMatchObject({ readonly: true, unix: "-" });
  });

  it("accepts `-U -` (private socket) and --run together", () => {
    const a = parseArgs(["-U", "-", "memory", "1M", "--run", "nbdcopy $uri out.img"]);
    expect(a).toMatchObject({ unix: "-", run: "nbdcopy $uri out.img", plugin: "memory", params: ["1M"] });
  });

  it("accepts nbdkit's alternative spellings", () => {
    const a = parseArgs(["--read-only", "--no-fork", "--export-name=e", "--ip-addr=h", "--pid-file=p", "--stdin", "--new-style", "null"]);
    expect(a).toMatchObject({ readonly: true, foreground: true, exportName: "e", ipaddr: "h", pidfile: "p", single: true });
    expect(parseArgs(["--export", "x", "null"]).exportName).toBe("x");
    expect(parseArgs(["--debug", "a.b=1", "null"]).debugFlags).toEqual([{ name: "a", flag: "b", value: 1 }]);
  });

  it("lets the last of repeated options win, across spellings", () => {
    expect(parseArgs(["-e", "a", "--export=b", "null"]).exportName).toBe("b");
    expect(parseArgs(["-4", "-6", "null"]).ipFamily).toBe(6);
    expect(parseArgs(["-D", "a.b=1", "-D", "c.d=2", "null"]).debugFlags).toEqual([{ name: "a", flag: "b", value: 1 }, { name: "c", flag: "d", value: 2 }]);
  });

  it("parses --tls values, including nbdkit's booleans", () => {
    expect(parseArgs(["--tls=require", "null"]).tls).toBe("require");
    expect(parseArgs(["--tls", "on", "null"]).tls).toBe("on");
    expect(parseTls("yes")).toBe("on");
    expect(parseTls("false")).toBe("off");
    expect(parseArgs(["--tls-certificates=/c", "--tls-psk=/k", "--tls-verify-peer", "null"])).toMatchObject({
      tlsCertificates: "/c", tlsPsk: "/k", tlsVerifyPeer: true,
    });
  });

  it("parses -t as nbdkit does (0 means the default)", () => {
    expect(parseThreads("1")).toBe(1);
    expect(parseThreads("0")).toBe(DEFAULT_THREADS);
  });

  it("recognizes the informational modes without a plugin", () => {
    expect(parseArgs(["--help"]).help).toBe(true);
    expect(parseArgs(["-V"]).version).toBe(true);
    expect(parseArgs(["--version"]).version).toBe(true);
    expect(parseArgs(["--dump-config"]).dumpConfig).toBe(true);
    expect(parseArgs(["memory", "--help"])).toMatchObject({ help: true, plugin: "memory" });
    expect(parseArgs(["--dump-plugin", "memory"])).toMatchObject({ dumpPlugin: true, plugin: "memory" });
    expect(parseArgs(["memory", "--dump-plugin"])).toMatchObject({ dumpPlugin: true, plugin: "memory" });
  });
});

describe("parseArgs: errors are one line", () => {
  it("needs a plugin", () => {
    expect(err([])).toBe("no plugins given on the command line (see 'nbdstate --help')");
    expect(err(["-f", "-r"])).toBe("no plugins given on the command line (see 'nbdstate --help')");
  });

  it("rejects unknown options, with a suggestion when one is close", () => {
    expect(err(["--bogus", "null"])).toBe("unrecognized option '--bogus'");
    expect(err(["-z", "null"])).toBe("unrecognized option '-z'");
    expect(err(["--readonyl", "null"])).toBe("unrecognized option '--readonyl' (did you mean --readonly?)");
    expect(err(["--readonly=1", "null"])).toBe("option '--readonly' doesn't allow an argument");
  });

  it("rejects a missing option argument", () => {
    expect(err(["null", "-p"])).toBe("option '-p, --port' requires an argument");
    expect(err(["null", "--run"])).toBe("option '--run' requires an argument");
  });

  it("rejects bad option values", () => {
    expect(err(["-p", "http", "null"])).toBe("-p: invalid port number 'http'");
    expect(err(["-p", "65536", "null"])).toBe("-p: invalid port number '65536'");
    expect(err(["-t", "5x", "null"])).toBe('threads: could not parse number: "5x": trailing garbage');
    expect(err(["-t", "-1", "null"])).toBe("threads: negative numbers are not allowed");
    expect(err(["-t", "abc", "null"])).toBe('threads: could not parse number: "abc"');
    expect(err(["--tls=maybe", "null"])).toBe("--tls must be off, on or require, not 'maybe'");
    expect(err(["--log=file", "null"])).toBe('--log must be "stderr", "syslog" or "null"');
    expect(err(["-D", "foo", "null"])).toBe("-D (Debug Flag) must have the format NAME.FLAG=N");
    expect(err(["--run", "  ", "null"])).toBe("--run: the command is empty");
  });

  it("rejects listener combinations nbdkit rejects", () => {
    const msg = "--dump-plugin, -p, --run, -s or -U options cannot be used in this combination";
    expect(err(["-p", "1", "-U", "/s", "null"])).toBe(msg);
    expect(err(["-p", "1", "-s", "null"])).toBe(msg);
    expect(err(["-U", "-", "-s", "null"])).toBe(msg);
    expect(err(["-s", "--run", "true", "null"])).toBe(msg);
    expect(err(["--dump-plugin", "-s", "null"])).toBe(msg);
    expect(err(["--dump-plugin", "--run", "true", "null"])).toBe(msg);
    // ... but not these
    expect(parseArgs(["-p", "1", "--run", "true", "null"]).port).toBe(1);
    expect(parseArgs(["-U", "-", "--run", "true", "null"]).unix).toBe("-");
  });

  it("names what it does not support", () => {
    expect(err(["--vsock", "null"])).toBe("--vsock is not supported by nbdstate");
    expect(err(["-o", "null"])).toBe("the oldstyle protocol (-o) is not supported by nbdstate");
    expect(err(["-u", "nobody", "null"])).toBe("-u (--user) is not supported by nbdstate");
  });
});

describe("isConfigKey", () => {
  it("follows nbdkit: a letter, then letters, digits, '.', '_' or '-'", () => {
    for (const k of ["size", "a", "x.y-z_1", "A9"]) expect(isConfigKey(k)).toBe(true);
    for (const k of ["", "_x", "1x", "./a", "a b", "x/y", "-a"]) expect(isConfigKey(k)).toBe(false);
  });
});

describe("OPTIONS table", () => {
  it("has no duplicate flags", () => {
    const flags = OPTIONS.flatMap((o) => o.flags.split(/[ ,]+/).filter((f) => f.startsWith("-")));
    expect(new Set(flags).size).toBe(flags.length);
  });
});
