// nbd plugin: proxy to another NBD server (nbdkit-nbd-plugin's command line).
//
// Each client connection opens its own upstream connection, unless
// shared=true: then one upstream connection, opened on first use and kept
// until unload, serves every client (a SharedHandle, the same runner the
// stack uses for shared contexts). Capabilities come from the upstream
// transmission flags; block status from its base:allocation context.

import { SharedHandle } from "../../backend/shared-handle.js";
import { parseBool } from "../../backend/size.js";
import {
  FLAG_FAST_ZERO, FLAG_FUA, FLAG_MAY_TRIM, FLAG_REQ_ONE, NbdError,
  type BlockSize, type CacheMode, type ExportEntry, type Extent, type FuaMode, type Plugin, type ServerServices,
} from "../../backend/types.js";
import {
  NbdClient, NbdRequestError, clientTlsFromFiles, openClient, parseNbdUri, type ClientTls, type ConnectTarget,
} from "../../client/index.js";
import * as C from "../../protocol/constants.js";

/** One upstream connection; replaced in place when a shared one is reconnected. */
interface Upstream {
  client: NbdClient;
  reconnecting?: Promise<void>;
}

export interface NbdHandle {
  up: Upstream;
  /** A reference to the shared upstream connection (released on close). */
  shared: boolean;
}

const DEFAULT_PORT = C.NBD_DEFAULT_PORT;
const SERVICES: Record<string, number> = { nbd: DEFAULT_PORT };

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Our request flags (nbdkit's) as NBD command flags. */
function cmdFlags(flags: number, zero = false): number {
  let f = 0;
  if (flags & FLAG_FUA) f |= C.NBD_CMD_FLAG_FUA;
  if (flags & FLAG_REQ_ONE) f |= C.NBD_CMD_FLAG_REQ_ONE;
  if (zero) {
    if (!(flags & FLAG_MAY_TRIM)) f |= C.NBD_CMD_FLAG_NO_HOLE;
    if (flags & FLAG_FAST_ZERO) f |= C.NBD_CMD_FLAG_FAST_ZERO;
  }
  return f;
}

/** An upstream failure as the error the client should see (same NBD errno). */
function upstreamError(e: unknown): Error {
  if (e instanceof NbdError) return e;
  if (e instanceof NbdRequestError) return new NbdError(e.errno, `nbd: upstream: ${e.message}`);
  if (e instanceof RangeError) return new NbdError(C.NBD_EINVAL, `nbd: ${e.message}`);
  // The connection is gone (NbdDisconnectedError) or broke the protocol:
  // every later request on it fails the same way, which is what the retry
  // filter reacts to (it reopens the context, i.e. reconnects).
  return new NbdError(C.NBD_EIO, `nbd: upstream connection lost: ${message(e)}`);
}

async function hangUp(c: NbdClient): Promise<void> {
  try {
    await c.disconnect();
  } catch {
    c.destroy();
  }
}

export default function createPlugin(): Plugin<NbdHandle> {
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
  let sharedUp: SharedHandle<Upstream> | null = null;
  const configWarnings: string[] = [];
  let services: ServerServices | undefined;

  function setOnce<T>(key: string, cur: T | undefined, v: T): T {
    if (cur !== undefined) throw new Error(`nbd: ${key} given more than once`);
    return v;
  }

  /** Connect, negotiate and enter transmission for `name`, retrying as retry= says. */
  async function connect(name: string): Promise<NbdClient> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await openClient({
          ...target!,
          ...(tls ? { tls } : {}),
          exportName: name,
          metaContexts: [C.BASE_ALLOCATION],
          requestBlockSize: true,
          infoRequests: [C.NBD_INFO_DESCRIPTION],
        });
      } catch (e) {
        if (attempt >= retry) {
          const err = new Error(`nbd: cannot connect to ${where}${name ? ` (export '${name}')` : ""}: ${message(e)}`, { cause: e });
          // The client is told the export failed; the log says why.
          services?.log(err.message);
          throw err;
        }
        await sleep(1000);
      }
    }
  }

  /** A shared connection that died is replaced (once) when a client opens it next. */
  async function revive(up: Upstream): Promise<void> {
    if (up.client.phase !== "closed") return;
    up.reconnecting ??= connect(exportName)
      .then((c) => {
        up.client = c;
      })
      .finally(() => {
        up.reconnecting = undefined;
      });
    await up.reconnecting;
  }

  /** A probe connection in option haggling (listing, default export). */
  async function probe<T>(fn: (c: NbdClient) => Promise<T>): Promise<T> {
    const c = await NbdClient.connect({ ...target!, ...(tls ? { tls } : {}) } as ConnectTarget);
    try {
      return await fn(c);
    } finally {
      await c.abort().catch(() => c.destroy());
    }
  }

  function flags(h: NbdHandle): number {
    return h.up.client.transmissionFlags;
  }
  function has(h: NbdHandle, flag: number): boolean {
    return (flags(h) & flag) !== 0;
  }

  /** Run one request upstream, mapping its failure; tracked on the shared handle. */
  function request<T>(h: NbdHandle, fn: (c: NbdClient) => Promise<T>): Promise<T> {
    let p: Promise<T>;
    try {
      p = fn(h.up.client);
    } catch (e) {
      p = Promise.reject(e);
    }
    p = p.catch((e: unknown) => {
      throw upstreamError(e);
    });
    return h.shared && sharedUp ? sharedUp.track(p) : p;
  }

  return {
    name: "nbd",
    version: "1.0.0",
    longname: "nbdstate nbd plugin",
    description: "Proxy to another NBD server.",
    magicConfigKey: "uri",
    configHelp:
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
      "tls-psk=<FILE>         Pre-shared keys file (username:hexkey lines).",

    dumpPlugin() {
      return "libnbd_uri=1\nlibnbd_tls=1\nlibnbd_vsock=0\nlibnbd_dynamic_list=1\n";
    },

    config(key, value) {
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
    },

    configComplete() {
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
    },

    afterFork(server) {
      services = server;
      for (const w of configWarnings) server.log(w);
      if (!shared) return;
      sharedUp = new SharedHandle<Upstream>({
        name: `nbd: shared connection to ${where}`,
        open: async () => ({ client: await connect(exportName) }),
        close: async (up) => {
          await up.reconnecting?.catch(() => {});
          await hangUp(up.client);
        },
      });
      sharedUp.afterFork();
    },

    async unload() {
      const s = sharedUp;
      sharedUp = null;
      if (s) await s.unload();
    },

    async listExports(): Promise<ExportEntry[]> {
      if (!dynamic) {
        // The one export offered is the upstream's: list it with its description.
        let description: string | undefined;
        let timer: NodeJS.Timeout | undefined;
        try {
          // At most 5 s: a listing must not hang on an unreachable upstream.
          const late = new Promise<never>((_, rej) => (timer = setTimeout(() => rej(new Error("timeout")), 5000)));
          const ask = probe(async (c) => (await c.info(exportName, [C.NBD_INFO_DESCRIPTION])).description);
          ask.catch(() => {});
          description = await Promise.race([ask, late]);
        } catch {
          // The upstream may be down or refuse NBD_OPT_INFO: list the export all the same.
        } finally {
          clearTimeout(timer);
        }
        return [description ? { name: "", description } : { name: "" }];
      }
      return probe(async (c) => (await c.list()).map((e) => (e.description ? e : { name: e.name })));
    },

    async defaultExport() {
      if (!dynamic) return "";
      // The upstream server's canonical name for "" (or "" if it does not say).
      try {
        return await probe(async (c) => (await c.info("", [C.NBD_INFO_NAME])).name ?? "");
      } catch {
        return "";
      }
    },

    async open(_readonly, name) {
      if (shared) {
        if (!sharedUp) throw new Error("nbd: shared=true: open before after_fork");
        const up = await sharedUp.acquire();
        try {
          await revive(up);
        } catch (e) {
          sharedUp.release();
          throw e;
        }
        return { up, shared: true };
      }
      return { up: { client: await connect(dynamic ? name : exportName) }, shared: false };
    },

    async close(h) {
      if (h.shared) sharedUp?.release();
      else await hangUp(h.up.client);
    },

    getSize(h) {
      return h.up.client.size;
    },
    canWrite(h) {
      return !has(h, C.NBD_FLAG_READ_ONLY);
    },
    canFlush(h) {
      return has(h, C.NBD_FLAG_SEND_FLUSH);
    },
    isRotational(h) {
      return has(h, C.NBD_FLAG_ROTATIONAL);
    },
    canTrim(h) {
      return has(h, C.NBD_FLAG_SEND_TRIM);
    },
    // Zeroing is always possible: without upstream WRITE_ZEROES, zero()
    // answers ENOTSUP and the stack writes zeroes instead (as nbdkit does).
    canZero() {
      return true;
    },
    canFastZero(h) {
      return has(h, C.NBD_FLAG_SEND_WRITE_ZEROES) && has(h, C.NBD_FLAG_SEND_FAST_ZERO);
    },
    canFua(h): FuaMode {
      return has(h, C.NBD_FLAG_SEND_FUA) ? "native" : "none";
    },
    // shared=true: every client goes through one upstream connection, so a
    // flush on any of them covers all writes (multi-conn holds whatever the
    // upstream says); otherwise the upstream's answer, passed on.
    canMultiConn(h) {
      return h.shared || has(h, C.NBD_FLAG_CAN_MULTI_CONN);
    },
    canCache(h): CacheMode {
      return has(h, C.NBD_FLAG_SEND_CACHE) ? "native" : "none";
    },
    canExtents(h) {
      return h.up.client.metaContexts.some((m) => m.name === C.BASE_ALLOCATION);
    },
    blockSize(h): BlockSize | null {
      const b = h.up.client.export?.blockSize;
      if (!b) return null;
      // Never advertise more than this server accepts in one request.
      return { ...b, maximum: Math.max(b.minimum, Math.min(b.maximum, C.MAX_REQUEST_SIZE)) };
    },
    exportDescription(h) {
      return h.up.client.export?.description || null;
    },

    pread(h, buf, offset) {
      return request(h, async (c) => {
        const data = await c.pread(buf.length, offset);
        if (data !== buf) data.copy(buf);
      });
    },
    pwrite(h, buf, offset, fl) {
      return request(h, (c) => c.pwrite(buf, offset, cmdFlags(fl)));
    },
    flush(h) {
      return request(h, (c) => c.flush());
    },
    trim(h, count, offset, fl) {
      return request(h, (c) => c.trim(count, offset, cmdFlags(fl)));
    },
    zero(h, count, offset, fl) {
      if (!has(h, C.NBD_FLAG_SEND_WRITE_ZEROES)) {
        return Promise.reject(new NbdError(C.NBD_ENOTSUP, "nbd: the upstream server cannot write zeroes"));
      }
      return request(h, (c) => c.zero(count, offset, cmdFlags(fl, true)));
    },
    cache(h, count, offset) {
      return request(h, (c) => c.cache(count, offset));
    },
    extents(h, count, offset, fl): Promise<Extent[]> {
      return request(h, async (c) => {
        const ext = await c.blockStatus(count, offset, cmdFlags(fl & FLAG_REQ_ONE));
        const out: Extent[] = [];
        for (const e of ext) if (e.length > 0) out.push({ length: e.length, type: e.flags & 3 });
        if (out.length === 0) throw new NbdError(C.NBD_EIO, "nbd: upstream block status returned no extent");
        return out;
      });
    },
  };
}
