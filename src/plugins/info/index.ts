// info plugin: a read-only disk holding information about the client and
// the server: the export name the client asked for (as is, or decoded from
// base64), the client's address, or a 12-byte clock (wall time, server
// uptime, time since the connection was accepted).

import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import type { Plugin, ConnectionInfo, PeerInfo } from "../../backend/types.js";
import { decodeBase64 } from "../kit/base64.js";

type Mode = "exportname" | "base64exportname" | "address" | "time" | "uptime" | "conntime" | "version";

const MODES: Record<string, Mode> = {
  exportname: "exportname",
  "export-name": "exportname",
  base64exportname: "base64exportname",
  "base64-export-name": "base64exportname",
  address: "address",
  time: "time",
  uptime: "uptime",
  conntime: "conntime",
  version: "version",
};

/** nbdstate's version (package.json, three levels above this file in src/ and dist/). */
function serverVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as { version?: string };
    return pkg.version ?? "";
  } catch {
    return "";
  }
}

interface InfoHandle {
  data: Buffer;
  /** For the clocks: process.hrtime.bigint() at the clock's zero. */
  zero: bigint;
}

/** The client's address as nbdkit prints it: "1.2.3.4:PORT", "[::1]:PORT", "unix". */
export function addressText(peer: PeerInfo | undefined): string {
  if (!peer) return "";
  switch (peer.family) {
    case "ipv4":
      return `${peer.address}:${peer.port}`;
    case "ipv6":
      return `[${(peer.address ?? "").replace(/%.*$/, "")}]:${peer.port}`;
    case "unix":
      // Not the socket path: it is a host file name (and Linux gives the
      // client side no path anyway).
      return "unix";
    default:
      return ""; // stdio: no address at all
  }
}

/** Seconds (64-bit) and microseconds (32-bit), big-endian, into b. */
function putTime(b: Buffer, micros: bigint): void {
  b.writeBigUInt64BE(micros / 1_000_000n, 0);
  b.writeUInt32BE(Number(micros % 1_000_000n), 8);
}

export default function createPlugin(): Plugin<InfoHandle> {
  let mode: Mode = "exportname";
  let loaded = 0n;

  /** Monotonic time (ns) of the moment a connection was accepted. */
  function acceptedAt(connection: ConnectionInfo | undefined): bigint {
    const now = process.hrtime.bigint();
    if (!connection) return now;
    const ago = Math.max(0, Date.now() - connection.acceptedAt);
    return now - BigInt(Math.round(ago * 1e6));
  }

  return {
    name: "info",
    version: "1.0.0",
    longname: "nbdstate info plugin",
    description: "Serves information about the client and the server (export name, address, time) as a disk.",
    magicConfigKey: "mode",
    configHelp:
      "mode=exportname|base64exportname|address|time|uptime|conntime|version\n" +
      "                     What the disk holds (default exportname).",

    load() {
      loaded = process.hrtime.bigint();
    },
    config(key, value) {
      if (key !== "mode") throw new Error(`info: unknown parameter '${key}'`);
      const m = MODES[value.toLowerCase()];
      if (!m) throw new Error(`info: unknown mode: '${value}'`);
      mode = m;
    },
    dumpPlugin() {
      return "info_address=yes\ninfo_base64=yes\n";
    },

    listExports: () => [{ name: "" }],
    defaultExport: () => "",

    open(_readonly, exportName, _tls, connection) {
      switch (mode) {
        case "exportname":
          return { data: Buffer.from(exportName, "utf8"), zero: 0n };
        case "base64exportname":
          try {
            return { data: decodeBase64(exportName), zero: 0n };
          } catch (e) {
            throw new Error(`info: export name: ${(e as Error).message}`);
          }
        case "address":
          return { data: Buffer.from(addressText(connection?.peer), "utf8"), zero: 0n };
        case "time":
          return { data: Buffer.alloc(12), zero: 0n };
        case "uptime":
          return { data: Buffer.alloc(12), zero: loaded };
        case "conntime":
          return { data: Buffer.alloc(12), zero: acceptedAt(connection) };
        case "version":
          return { data: Buffer.from(serverVersion(), "utf8"), zero: 0n };
      }
    },

    getSize: (h) => h.data.length,
    canWrite: () => false,
    canFlush: () => false,
    isRotational: () => false,
    canTrim: () => false,
    canZero: () => false,
    canFastZero: () => false,
    canFua: () => "none",
    // The exportname modes serve the same bytes to every connection of one
    // export name (version: to all); the others differ per client or moment.
    canMultiConn: () => mode === "exportname" || mode === "base64exportname" || mode === "version",
    canExtents: () => false,
    canCache: () => "native",

    pread(h, buf, offset) {
      // The clocks are read afresh for every request (read all 12 bytes in
      // one request to get a consistent value).
      if (mode === "time") {
        putTime(h.data, BigInt(Math.floor((performance.timeOrigin + performance.now()) * 1000)));
      } else if (mode === "uptime" || mode === "conntime") {
        putTime(h.data, (process.hrtime.bigint() - h.zero) / 1000n);
      }
      h.data.copy(buf, 0, offset, offset + buf.length);
    },
    cache() {},
  };
}
