// The nbd plugin's parameters (nbdkit-nbd-plugin's): parsed one at a time
// by set(), checked and resolved together by complete() into where to
// connect, the export, TLS and the sharing mode.

import { parseBool } from "../../backend/size.js";
import { clientTlsFromFiles, parseNbdUri, type ClientTls, type ConnectTarget } from "../../client/index.js";
import * as C from "../../protocol/constants.js";

export const DEFAULT_PORT = C.NBD_DEFAULT_PORT;
const SERVICES: Record<string, number> = { nbd: DEFAULT_PORT };

export function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export const CONFIG_HELP =
    "[uri=]<URI>            URI of an NBD server: nbd://HOST[:PORT][/EXPORT] or\n" +
    "                       nbd+unix:///[EXPORT]?socket=PATH.\n" +
    "socket=<SOCKNAME>      The Unix socket of the NBD server.\n" +
    "hostname=<HOST>        The host of the NBD server (TCP).\n" +
    "port=<PORT>            Its TCP port (default 10809).\n" +
    "export=<NAME>          Export name to open (default \"\").\n" +
    "dynamic-export=<BOOL>  Pass the client's export name upstream (default false).\n" +
    "shared=<BOOL>          One upstream connection for all clients (default false).\n" +
    "retry=<N>              Retry the connection N times, 1 s apart (default 0).\n" +
    "tls=<off|on|require>   TLS to the upstream (default off; on if another tls-* is given;\n" +
    "                       require for nbds:// URIs).\n" +
    "tls-certificates=<DIR> ca-cert.pem to verify the server, client-cert.pem/client-key.pem.\n" +
    "tls-verify=false       Do not verify the server's certificate.\n" +
    "tls-username=<NAME>    PSK identity (default: the local user).\n" +
    "tls-psk=<FILE>         Pre-shared keys file (username:hexkey lines).";

/** The upstream and how to use it, once every parameter is in. */
export interface NbdSettings {
  target: ConnectTarget;
  exportName: string;
  /** The upstream as messages name it. */
  where: string;
  tls: ClientTls | undefined;
  shared: boolean;
  dynamic: boolean;
  retry: number;
  /** Said once the server can log (afterFork). */
  warnings: string[];
}

export function nbdParams(): { set(key: string, value: string): void; complete(): NbdSettings } {
  let uri: string | undefined;
  let socket: string | undefined;
  let hostname: string | undefined;
  let port: number | undefined;
  let exportParam: string | undefined;
  let shared = false;
  let dynamic = false;
  let retry = 0;
  let tlsMode: "off" | "on" | "require" | undefined;
  let tlsCertificates: string | undefined;
  let tlsVerify: boolean | undefined;
  let tlsUsername: string | undefined;
  let tlsPsk: string | undefined;
  let tls: ClientTls | undefined;

  let target: ConnectTarget | undefined;
  let exportName = "";
  let where = "";
  const configWarnings: string[] = [];

  function setOnce<T>(key: string, cur: T | undefined, v: T): T {
    if (cur !== undefined) throw new Error(`nbd: ${key} given more than once`);
    return v;
  }

  function set(key: string, value: string): void {
    const bool = (): boolean => {
      try {
        return parseBool(value);
      } catch (e) {
        throw new Error(`nbd: ${key}: ${message(e)}`);
      }
    };
    switch (key) {
      case "uri":
        uri = setOnce(key, uri, value);
        return;
      case "socket":
        socket = setOnce(key, socket, value);
        return;
      case "hostname":
        hostname = setOnce(key, hostname, value);
        return;
      case "port": {
        const n = /^[0-9]+$/.test(value) ? Number(value) : SERVICES[value];
        if (n === undefined || !(n >= 1 && n <= 65535)) throw new Error(`nbd: port: not a TCP port number: '${value}'`);
        port = setOnce(key, port, n);
        return;
      }
      case "export":
        exportParam = setOnce(key, exportParam, value);
        return;
      case "shared":
        shared = bool();
        return;
      case "dynamic-export":
        dynamic = bool();
        return;
      case "retry":
        if (!/^[0-9]+$/.test(value)) throw new Error(`nbd: retry: not a number of retries: '${value}'`);
        retry = Number(value);
        return;
      case "tls": {
        const v = value.toLowerCase();
        if (v === "require" || v === "required") tlsMode = "require";
        else if (v === "on") tlsMode = "on";
        else if (v === "off") tlsMode = "off";
        else tlsMode = bool() ? "on" : "off";
        return;
      }
      case "tls-certificates":
        tlsCertificates = value;
        return;
      case "tls-verify":
        tlsVerify = bool();
        return;
      case "tls-username":
        tlsUsername = value;
        return;
      case "tls-psk":
        tlsPsk = value;
        return;
      case "command":
      case "arg":
      case "socket-fd":
      case "vsock":
        throw new Error(`nbd: ${key}: not supported by nbdstate (use uri=, socket= or hostname=)`);
      default:
        throw new Error(`nbd: unknown parameter '${key}'`);
    }
  }

  function complete(): NbdSettings {
    const given = [uri && "uri", socket && "socket", hostname && "hostname"].filter(Boolean);
    if (given.length === 0) throw new Error("nbd: an upstream server is required: give uri=, socket= or hostname=");
    if (given.length > 1) throw new Error(`nbd: give only one of uri=, socket=, hostname= (got ${given.join(", ")})`);
    if (port !== undefined && hostname === undefined) throw new Error("nbd: port= needs hostname=");
    let uriTls = false;
    if (uri !== undefined) {
      const u = parseNbdUri(uri);
      uriTls = u.tls;
      target = u.target;
      // nbdkit's rule (libnbd's nbd_connect_uri): the URI's export name is
      // the one used, even when export= is given too.
      if (exportParam !== undefined && exportParam !== u.exportName && !dynamic) {
        configWarnings.push(`nbd: export=${exportParam} is ignored: the URI names export '${u.exportName}' (as nbdkit)`);
      }
      exportName = u.exportName;
      where = uri;
      tlsCertificates ??= u.tlsCertificates;
      tlsPsk ??= u.tlsPskFile;
      tlsUsername ??= u.tlsUsername;
    } else if (socket !== undefined) {
      target = { path: socket };
      where = `unix socket ${socket}`;
      if (exportParam !== undefined) exportName = exportParam;
    } else {
      target = { host: hostname!, port: port ?? DEFAULT_PORT };
      where = `${hostname}:${port ?? DEFAULT_PORT}`;
      if (exportParam !== undefined) exportName = exportParam;
    }
    // nbdkit: off unless another tls option is given (then on); nbds:// requires it.
    const anyTls = tlsCertificates !== undefined || tlsPsk !== undefined || tlsUsername !== undefined || tlsVerify !== undefined;
    let mode = tlsMode ?? (anyTls ? "on" : "off");
    if (uriTls) {
      if (tlsMode === "off") throw new Error(`nbd: tls=off cannot be used with the TLS URI ${uri}`);
      mode = "require";
    }
    if (mode !== "off") {
      try {
        tls = clientTlsFromFiles({
          mode,
          certificates: tlsCertificates,
          pskFile: tlsPsk,
          username: tlsUsername,
          verify: tlsVerify,
        });
      } catch (e) {
        throw new Error(`nbd: ${tlsPsk !== undefined ? "tls-psk" : "tls-certificates"}: ${message(e)}`);
      }
    }
    if (dynamic && shared) throw new Error("nbd: dynamic-export=true cannot be used with shared=true");
    if (dynamic && exportParam !== undefined) throw new Error("nbd: dynamic-export=true cannot be used with export=");
    return { target: target!, exportName, where, tls, shared, dynamic, retry, warnings: configWarnings };
  }

  return { set, complete };
}
