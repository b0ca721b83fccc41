import { describe, it, expect } from "vitest";
import { parseArgs } from "../../src/cli/args.js";
import { captiveEnv } from "../../src/cli/captive.js";
import { activationFds, nbdUri, planListeners, uriQuote } from "../../src/cli/listeners.js";

const plan = (argv: string[], env: NodeJS.ProcessEnv = {}, pid = 100) => planListeners(parseArgs(argv), env, pid);

describe("planListeners", () => {
  it("defaults to TCP port 10809 on all addresses", () => {
    expect(plan(["null"])).toEqual({ listeners: [{ kind: "tcp", port: 10809 }], activation: false, privateUnix: false });
  });

  it("honours -p, -i, -4 and -6", () => {
    expect(plan(["-p", "0", "-i", "127.0.0.1", "null"]).listeners).toEqual([{ kind: "tcp", port: 0, host: "127.0.0.1" }]);
    expect(plan(["-4", "null"]).listeners).toEqual([{ kind: "tcp", port: 10809, host: "0.0.0.0", family: 4 }]);
    expect(plan(["-6", "null"]).listeners).toEqual([{ kind: "tcp", port: 10809, host: "::", family: 6 }]);
    expect(plan(["-6", "-i", "localhost", "null"]).listeners).toEqual([{ kind: "tcp", port: 10809, host: "localhost", family: 6 }]);
    expect(plan(["--keepalive", "-p", "1", "null"]).listeners).toEqual([{ kind: "tcp", port: 1, keepalive: true }]);
  });

  it("uses -U SOCKET, -U - (private) and -s (stdio)", () => {
    expect(plan(["-U", "/tmp/s", "null"]).listeners).toEqual([{ kind: "unix", path: "/tmp/s" }]);
    expect(plan(["-U", "-", "null"])).toMatchObject({ listeners: [], privateUnix: true });
    expect(plan(["-s", "null"]).listeners).toEqual([{ kind: "stdio" }]);
  });

  it("gives --run a private socket unless -p or -U is given", () => {
    expect(plan(["--run", "true", "null"])).toMatchObject({ privateUnix: true });
    expect(plan(["--run", "true", "-p", "1234", "null"]).listeners).toEqual([{ kind: "tcp", port: 1234 }]);
  });

  it("uses socket activation when LISTEN_PID is this process", () => {
    const env = { LISTEN_PID: "100", LISTEN_FDS: "2" };
    expect(plan(["null"], env)).toEqual({ listeners: [{ kind: "activation", fds: [3, 4] }], activation: true, privateUnix: false });
    expect(plan(["null"], env, 101).listeners[0]!.kind).toBe("tcp");
    expect(activationFds({ LISTEN_PID: "100", LISTEN_FDS: "0" }, 100)).toEqual([]);
    expect(() => plan(["-p", "1", "null"], env)).toThrow("cannot use socket activation with -i, -p, -s or -U options");
  });
});

describe("URIs for --run", () => {
  it("quotes as nbdkit's uri_quote", () => {
    expect(uriQuote("a b/c")).toBe("a%20b/c");
    expect(uriQuote("x?y#z%/é")).toBe("x%3Fy%23z%25/%C3%A9");
  });

  it("builds nbd+unix and nbd URIs like nbdkit", () => {
    expect(nbdUri({ unixSocket: "/tmp/d/socket" }, "", "off")).toBe("nbd+unix://?socket=/tmp/d/socket");
    expect(nbdUri({ unixSocket: "/tmp/a b%c" }, "x?y#z%/é", "off")).toBe("nbd+unix:///x%3Fy%23z%25/%C3%A9?socket=/tmp/a%20b%25c");
    expect(nbdUri({ port: 10999 }, "foo", "off")).toBe("nbd://localhost:10999/foo");
    expect(nbdUri({ port: 10999 }, "", "require")).toBe("nbds://localhost:10999");
    expect(nbdUri({}, "", "off")).toBeUndefined();
  });

  it("sets the captive environment", () => {
    const env = captiveEnv({ PATH: "/bin", tls: "x", LISTEN_PID: "1" }, { uri: "?", unixSocket: "/s" }, "e", "off");
    expect(env).toMatchObject({ PATH: "/bin", uri: "nbd+unix:///e?socket=/s", nbd: "nbd+unix:///e?socket=/s", unixsocket: "/s", port: "", exportname: "e" });
    expect(env.tls).toBeUndefined();
    expect(env.LISTEN_PID).toBeUndefined();
    const tcp = captiveEnv({}, { uri: "?", port: 10809 }, "", "on");
    expect(tcp).toMatchObject({ uri: "nbd://localhost:10809", port: "10809", unixsocket: "", exportname: "", tls: "1" });
  });
});
