// nbd plugin: proxy to another NBD server (nbdkit-nbd-plugin's command line).
//
// Each client connection opens its own upstream connection, unless
// shared=true: then one upstream connection, opened on first use and kept
// until unload, serves every client (a SharedHandle, the same runner the
// stack uses for shared contexts). Capabilities come from the upstream
// transmission flags; block status from its base:allocation context.

import { SharedHandle } from "../../backend/shared-handle.js";
import {
  FLAG_FAST_ZERO, FLAG_FUA, FLAG_MAY_TRIM, FLAG_REQ_ONE, NbdError,
  type BlockSize, type CacheMode, type ExportEntry, type Extent, type FuaMode, type Plugin, type ServerServices,
} from "../../backend/types.js";
import {
  NbdClient, NbdRequestError, openClient, type ClientTls, type ConnectTarget,
} from "../../client/index.js";
import * as C from "../../protocol/constants.js";
import { CONFIG_HELP, message, nbdParams } from "./config.js";

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
  const params = nbdParams();
  let shared = false;
  let dynamic = false;
  let retry = 0;
  let tls: ClientTls | undefined;
  let target: ConnectTarget | undefined;
  let exportName = "";
  let where = "";
  let sharedUp: SharedHandle<Upstream> | null = null;
  let configWarnings: string[] = [];
  let services: ServerServices | undefined;

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
    configHelp: CONFIG_HELP,

    dumpPlugin() {
      return "libnbd_uri=1\nlibnbd_tls=1\nlibnbd_vsock=0\nlibnbd_dynamic_list=1\n";
    },

    config(key, value) {
      params.set(key, value);
    },

    configComplete() {
      ({ target, exportName, where, tls, shared, dynamic, retry, warnings: configWarnings } = params.complete());
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
