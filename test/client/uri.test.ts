import { describe, expect, it } from "vitest";
import { openNbdUri, parseNbdUri } from "../../src/client/uri.js";

describe("NBD URIs", () => {
  it("nbd://host[:port][/export]", () => {
    expect(parseNbdUri("nbd://example.com")).toEqual({ target: { host: "example.com", port: 10809 }, exportName: "", tls: false });
    expect(parseNbdUri("nbd://example.com:1234/")).toEqual({ target: { host: "example.com", port: 1234 }, exportName: "", tls: false });
    expect(parseNbdUri("nbd://h/disk%20one").exportName).toBe("disk one");
    expect(parseNbdUri("nbd://h//abs/path").exportName).toBe("/abs/path");
    expect(parseNbdUri("nbd://[::1]:99/x")).toEqual({ target: { host: "::1", port: 99 }, exportName: "x", tls: false });
    expect(parseNbdUri("nbds://h/x").tls).toBe(true);
  });

  it("nbd+unix:///export?socket=PATH", () => {
    expect(parseNbdUri("nbd+unix:///exp?socket=/tmp/s.sock")).toEqual({ target: { path: "/tmp/s.sock" }, exportName: "exp", tls: false });
    expect(parseNbdUri("nbd+unix://?socket=/tmp/s")).toEqual({ target: { path: "/tmp/s" }, exportName: "", tls: false });
    expect(parseNbdUri("nbds+unix:///?socket=/s").tls).toBe(true);
    expect(() => parseNbdUri("nbd+unix:///exp")).toThrow(/socket=/);
    expect(() => parseNbdUri("nbd+unix://host/exp?socket=/s")).toThrow(/no host/);
  });

  it("rejects other schemes; nbds URIs carry libnbd's TLS query parameters", async () => {
    expect(() => parseNbdUri("http://h/x")).toThrow(/not an NBD URI/);
    expect(() => parseNbdUri("nbd+vsock:///x")).toThrow(/not an NBD URI/);
    expect(() => parseNbdUri("/tmp/sock")).toThrow(/not an NBD URI/);
    expect(parseNbdUri("nbds://alice@h/x?tls-psk-file=/k.psk")).toMatchObject({ tls: true, tlsPskFile: "/k.psk", tlsUsername: "alice" });
    expect(parseNbdUri("nbds+unix:///?socket=/s&tls-certificates=/pki")).toMatchObject({ tls: true, tlsCertificates: "/pki", target: { path: "/s" } });
    await expect(openNbdUri("nbds://localhost/x?tls-psk-file=/nonexistent/k.psk")).rejects.toThrow(/cannot read \/nonexistent\/k.psk: no such file/);
  });
});
