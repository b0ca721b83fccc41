// curl plugin: a disk image served over HTTP or HTTPS (nbdkit-curl-plugin's
// command line), read with ranged GETs through undici. Read-only: see the
// manual for why nbdkit's PUT writes are not offered.

import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseBool } from "../../backend/size.js";
import { NbdError, type Plugin, type ServerServices } from "../../backend/types.js";
import { NBD_EIO } from "../../protocol/constants.js";
import { readSecret } from "../kit/secret.js";
import { HttpSource, type HttpSettings } from "./http.js";

export interface CurlHandle {
  size: number;
}

const TLS_VERSIONS: Record<string, NonNullable<HttpSettings["tls"]["minVersion"]>> = {
  tlsv1: "TLSv1",
  "tlsv1.0": "TLSv1",
  "tlsv1.1": "TLSv1.1",
  "tlsv1.2": "TLSv1.2",
  "tlsv1.3": "TLSv1.3",
};

const UNSUPPORTED: Record<string, string> = {
  "cookie-script": "header and cookie scripts are not supported",
  "cookie-script-renew": "header and cookie scripts are not supported",
  "header-script": "header and cookie scripts are not supported",
  "header-script-renew": "header and cookie scripts are not supported",
  cookiefile: "cookie files are not supported (use cookie=)",
  cookiejar: "cookie files are not supported (use cookie=)",
  proxy: "proxies are not supported",
  "proxy-user": "proxies are not supported",
  "proxy-password": "proxies are not supported",
};

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** A failure of the server or the network, as the client sees it (EIO) and the log shows it (one line). */
function ioError(e: unknown): NbdError {
  if (e instanceof NbdError) return e;
  return new NbdError(NBD_EIO, `curl: ${message(e)}`);
}

/** PEM certificates of a file, or of every file in a directory (capath=). */
function readCertificates(path: string, dir: boolean, what: string): string[] {
  try {
    if (!dir) return [readFileSync(path, "utf8")];
    return readdirSync(path)
      .filter((f) => /\.(pem|crt)$/i.test(f) || /^[0-9a-f]{8}\.[0-9]+$/i.test(f))
      .map((f) => readFileSync(join(path, f), "utf8"));
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new Error(`curl: ${what}: cannot read ${path}: ${err.code === "ENOENT" ? "no such file" : err.code ?? err.message}`);
  }
}

export default function createPlugin(): Plugin<CurlHandle> {
  let url: URL | undefined;
  const headers: [string, string | null][] = [];
  let cookie: string | undefined;
  let user: string | undefined;
  let password: string | undefined;
  let cainfo: string | undefined;
  let capath: string | undefined;
  let sslverify = true;
  let timeout = 0;
  let followLocation = true;
  let connections = 4;
  let protocols: Set<string> | undefined;
  let userAgent: string | undefined;
  let unixSocketPath: string | undefined;
  let minVersion: HttpSettings["tls"]["minVersion"];
  let ciphers: string[] = [];
  let keepAlive = true;
  let retries = 5;
  let retryDelayMs = 100;

  let source: HttpSource | undefined;
  let services: ServerServices | undefined;

  function settings(): HttpSettings {
    const h: Record<string, string | string[]> = {};
    for (const [name, value] of headers) {
      const k = name.toLowerCase();
      if (value === null) delete h[k];
      else h[k] = k in h ? ([] as string[]).concat(h[k]!, value) : value;
    }
    if (userAgent !== undefined) h["user-agent"] = userAgent;
    if (cookie !== undefined) h.cookie = cookie;
    const ca = [...(cainfo !== undefined ? (cainfo === "" ? [] : readCertificates(cainfo, false, "cainfo")) : []), ...(capath !== undefined ? readCertificates(capath, true, "capath") : [])];
    let authorization: string | undefined;
    if (user !== undefined || password !== undefined) {
      authorization = "Basic " + Buffer.from(`${user ?? ""}:${password ?? ""}`).toString("base64");
    }
    return {
      url: url!,
      headers: h,
      authorization,
      connections,
      timeoutMs: timeout * 1000,
      followLocation,
      protocols: protocols ?? new Set(["http", "https"]),
      retries,
      retryDelayMs,
      tls: {
        ca: cainfo !== undefined || capath !== undefined ? ca : undefined,
        rejectUnauthorized: sslverify,
        minVersion,
        ciphers: ciphers.length ? ciphers.join(":") : undefined,
      },
      socketPath: unixSocketPath,
      keepAlive,
    };
  }

  function http(): HttpSource {
    if (!source) {
      source = new HttpSource(settings());
      if (services) source.debug = services.debug;
    }
    return source;
  }

  return {
    name: "curl",
    version: "1.0.0",
    longname: "nbdstate curl plugin",
    description: "A disk image served over HTTP or HTTPS, read with ranged GET requests.",
    magicConfigKey: "url",
    configHelp:
      "[url=]<URL>               (required) The http:// or https:// URL of the disk image.\n" +
      "header=<HEADER>           Send 'Name: value' ('Name:' removes, 'Name;' sends it empty).\n" +
      "cookie=<COOKIE>|+FILE|-|-FD  Send a Cookie header.\n" +
      "user=<USER>               User name for HTTP basic authentication.\n" +
      "password=<PASS>|+FILE|-|-FD  Its password.\n" +
      "cainfo=<FILE>             CA certificates to trust (\"\" trusts none).\n" +
      "capath=<DIR>              A directory of CA certificates to trust.\n" +
      "sslverify=false           Do not verify the server's certificate.\n" +
      "ssl-version=tlsv1.N       The lowest TLS version to accept.\n" +
      "ssl-cipher-list=<LIST>    TLS 1.2 cipher list.  tls13-ciphers=<LIST>  TLS 1.3 suites.\n" +
      "timeout=<SECS>            Time limit per HTTP request (default: none).\n" +
      "followlocation=false      Do not follow redirects.\n" +
      "connections=<N>           HTTP connections shared by all clients (default 4).\n" +
      "protocols=<LIST>          Allowed schemes, e.g. https (default http,https).\n" +
      "user-agent=<UA>           Send a User-Agent header (default none).\n" +
      "unix-socket-path=<PATH>   Connect to the HTTP server over this Unix socket.\n" +
      "tcp-keepalive=<BOOL>      TCP keepalives on the HTTP connections (default true).\n" +
      "retries=<N>               Retries on 5xx and broken connections (default 5).\n" +
      "retry-delay=<MS>          First backoff delay, doubled each retry (default 100).",

    dumpPlugin() {
      return "curl_version=undici\ncurl_protocols=http,https\n";
    },

    config(key, value) {
      const bool = (): boolean => {
        try {
          return parseBool(value);
        } catch (e) {
          throw new Error(`curl: ${key}: ${message(e)}`);
        }
      };
      const count = (min: number, max: number): number => {
        if (!/^[0-9]+$/.test(value) || Number(value) < min || Number(value) > max) {
          throw new Error(`curl: ${key}: expected a number from ${min} to ${max}, not '${value}'`);
        }
        return Number(value);
      };
      switch (key) {
        case "url": {
          if (url) throw new Error("curl: url given more than once");
          let u: URL;
          try {
            u = new URL(value);
          } catch {
            throw new Error(`curl: url: not a URL: '${value}'`);
          }
          const scheme = u.protocol.replace(/:$/, "");
          if (scheme !== "http" && scheme !== "https") {
            throw new Error(`curl: url: ${scheme}: nbdstate's curl plugin speaks http and https only (use the ssh plugin for sftp, the file plugin for file:)`);
          }
          // Credentials in the URL become user=/password= (curl does the same).
          if (u.username && user === undefined) user = decodeURIComponent(u.username);
          if (u.password && password === undefined) password = decodeURIComponent(u.password);
          u.username = "";
          u.password = "";
          url = u;
          return;
        }
        case "header": {
          const m = /^([^:;]+)([:;])\s*(.*)$/s.exec(value);
          if (!m || !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(m[1]!.trim())) throw new Error(`curl: header: expected 'Name: value', not '${value}'`);
          const name = m[1]!.trim();
          if (m[2] === ";") headers.push([name, ""]);
          else headers.push([name, m[3] === "" ? null : m[3]!]);
          return;
        }
        case "cookie":
          if (cookie !== undefined) throw new Error("curl: cookie given more than once");
          cookie = readSecret("curl: cookie", value);
          return;
        case "user":
          user = value;
          return;
        case "password":
          password = readSecret("curl: password", value);
          return;
        case "cainfo":
          cainfo = value;
          return;
        case "capath":
          capath = value;
          return;
        case "sslverify":
          sslverify = bool();
          return;
        case "ssl-version": {
          const v = TLS_VERSIONS[value.toLowerCase()];
          if (value === "" || value.toLowerCase() === "default") minVersion = undefined;
          else if (!v) throw new Error(`curl: ssl-version: '${value}' is not supported (tlsv1, tlsv1.0 ... tlsv1.3)`);
          else minVersion = v;
          return;
        }
        case "ssl-cipher-list":
        case "tls13-ciphers":
          if (value) ciphers.push(value);
          return;
        case "timeout":
          timeout = count(0, 24 * 3600);
          return;
        case "followlocation":
          followLocation = bool();
          return;
        case "connections":
          connections = count(1, 1024);
          return;
        case "protocols": {
          const list = value.split(",").map((p) => p.trim().toLowerCase()).filter(Boolean);
          if (list.length === 0) throw new Error("curl: protocols: empty list");
          protocols = new Set(list);
          return;
        }
        case "user-agent":
          userAgent = value;
          return;
        case "unix-socket-path":
          unixSocketPath = value;
          return;
        case "tcp-keepalive":
          keepAlive = bool();
          return;
        case "tcp-nodelay":
          if (!bool()) throw new Error("curl: tcp-nodelay=false: not supported (HTTP sockets always have Nagle's algorithm off)");
          return;
        case "retries":
          retries = count(0, 100);
          return;
        case "retry-delay":
          retryDelayMs = count(0, 60_000);
          return;
        default:
          if (key in UNSUPPORTED) throw new Error(`curl: ${key}: ${UNSUPPORTED[key]} by nbdstate`);
          throw new Error(`curl: unknown parameter '${key}'`);
      }
    },

    configComplete() {
      if (!url) throw new Error("curl: the url parameter is required");
      const scheme = url.protocol.replace(/:$/, "");
      if (protocols && !protocols.has(scheme)) throw new Error(`curl: url: protocol ${scheme} is not in protocols=${[...protocols].join(",")}`);
      // Read certificate files now: a missing one is a startup error.
      settings();
    },

    afterFork(server) {
      services = server;
      if (source) source.debug = server.debug;
    },

    async unload() {
      const s = source;
      source = undefined;
      await s?.close();
    },

    async open() {
      try {
        return { size: await http().size() };
      } catch (e) {
        // The client is told the export failed; the server logs the reason (one line per failed open).
        throw new Error(`curl: ${message(e)}`);
      }
    },

    getSize(h) {
      return h.size;
    },
    // Read-only: no common HTTP server stores a PUT with a range (see README).
    canWrite() {
      return false;
    },
    // Every connection reads the same resource through the same pool.
    canMultiConn() {
      return true;
    },
    isRotational() {
      return false;
    },

    async pread(_h, buf, offset) {
      if (buf.length === 0) return; // no byte range names nothing
      try {
        await http().read(buf, offset);
      } catch (e) {
        // The server logs failed requests (rate-limited), with the connection.
        throw ioError(e);
      }
    },
  };
}
