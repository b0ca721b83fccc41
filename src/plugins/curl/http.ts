// The curl plugin's HTTP side: one undici Agent (a keep-alive connection pool
// per origin, at most `connections` sockets each) shared by every NBD
// connection, ranged GETs read straight into the caller's buffer, redirects
// followed by hand (so protocols= and the credential rules apply to every
// hop), and retries with exponential backoff on 5xx answers and broken
// connections, resuming a cut-off body where it stopped.

import { Agent, type Dispatcher } from "undici";
import type { IncomingHttpHeaders } from "undici/types/header.js";

export interface HttpSettings {
  url: URL;
  /** Headers sent on every request (lower-case names), header= and cookie= included. */
  headers: Record<string, string | string[]>;
  /** "Basic ..." for user=/password=, sent only to the URL's own origin (as curl). */
  authorization?: string;
  /** Sockets per origin (connections=). */
  connections: number;
  /** Per attempt, ms (timeout=); 0 = none. */
  timeoutMs: number;
  followLocation: boolean;
  /** Schemes allowed, on the URL and on every redirect (protocols=). */
  protocols: Set<string>;
  /** Retries after the first attempt, and the first backoff delay in ms. */
  retries: number;
  retryDelayMs: number;
  tls: {
    ca?: string[];
    rejectUnauthorized: boolean;
    minVersion?: "TLSv1" | "TLSv1.1" | "TLSv1.2" | "TLSv1.3";
    maxVersion?: "TLSv1" | "TLSv1.1" | "TLSv1.2" | "TLSv1.3";
    ciphers?: string;
  };
  socketPath?: string;
  keepAlive: boolean;
}

/** An error the server or the network gave; `retryable` if trying again may help. */
export class HttpError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
    readonly status?: number,
  ) {
    super(message);
    this.name = "HttpError";
  }
}

const MAX_REDIRECTS = 50;
const RETRY_STATUS = new Set([408, 429, 500, 502, 503, 504]);
const RETRY_CODES = new Set([
  "ECONNRESET", "EPIPE", "ECONNREFUSED", "ETIMEDOUT", "EAI_AGAIN", "ENETUNREACH", "EHOSTUNREACH",
  "UND_ERR_SOCKET", "UND_ERR_CLOSED", "UND_ERR_CONNECT_TIMEOUT", "UND_ERR_HEADERS_TIMEOUT",
  "UND_ERR_BODY_TIMEOUT", "UND_ERR_ABORTED", "ABORT_ERR", "UND_ERR_REQ_CONTENT_LENGTH_MISMATCH",
  "UND_ERR_RES_CONTENT_LENGTH_MISMATCH",
]);

/** Drop a response body we will not read (an unread body would hold its connection). */
function discard(body: Dispatcher.ResponseData["body"]): void {
  body.on("error", () => {});
  body.destroy();
}

/** Read a small body to its end, so its connection goes back to the pool. */
async function drain(body: Dispatcher.ResponseData["body"]): Promise<void> {
  await body.dump({ limit: 65536 }).catch(() => {});
}

/** Done with a response we will not use: an error page is drained, a whole resource dropped. */
async function release(res: Dispatcher.ResponseData): Promise<void> {
  if (res.statusCode >= 200 && res.statusCode < 300) discard(res.body);
  else await drain(res.body);
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function header(h: IncomingHttpHeaders, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

/** A network-level failure as one line, and whether to retry it. */
function networkError(e: unknown, what: string): HttpError {
  if (e instanceof HttpError) return e;
  const err = e as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException };
  // timeout= aborts with a DOMException named TimeoutError (its numeric .code is not errno's).
  const timedOut = err.name === "TimeoutError" || err.cause?.name === "TimeoutError" ||
    err.code === "UND_ERR_HEADERS_TIMEOUT" || err.code === "UND_ERR_BODY_TIMEOUT";
  if (timedOut) return new HttpError(`${what}: timed out`, true);
  const code = typeof err.code === "string" ? err.code : typeof err.cause?.code === "string" ? err.cause.code : undefined;
  const msg = (err.cause?.message ?? err.message ?? String(e)).split("\n")[0];
  return new HttpError(`${what}: ${msg}${code ? ` (${code})` : ""}`, code !== undefined && RETRY_CODES.has(code));
}

function statusLine(status: number): string {
  const names: Record<number, string> = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 416: "Range Not Satisfiable", 429: "Too Many Requests", 500: "Internal Server Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
  };
  return names[status] ? `${status} ${names[status]}` : `HTTP ${status}`;
}

export class HttpSource {
  private readonly agent: Agent;
  private closed = false;
  /** Lines for -v (retries, redirects); set once the server gives its services. */
  debug: (msg: string) => void = () => {};

  constructor(readonly s: HttpSettings) {
    this.agent = new Agent({
      connections: s.connections,
      pipelining: 1,
      keepAliveTimeout: 30_000,
      connect: {
        ...s.tls,
        socketPath: s.socketPath,
        keepAlive: s.keepAlive,
      },
    });
  }

  /** Where requests go, for messages (no credentials). */
  get where(): string {
    const u = new URL(this.s.url);
    u.username = "";
    u.password = "";
    return u.toString();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.agent.close().catch(() => this.agent.destroy());
  }

  /**
   * One request, following redirects; the response body is left to the
   * caller (consume or destroy it). Throws HttpError on network failure.
   */
  private async send(method: "GET" | "HEAD", extra: Record<string, string>, signal?: AbortSignal): Promise<Dispatcher.ResponseData> {
    let url = this.s.url;
    for (let hops = 0; ; hops++) {
      const headers: Record<string, string | string[]> = { ...this.s.headers, ...extra };
      // curl sends user=/password= to the first host only, not to where it is redirected.
      if (this.s.authorization && url.origin === this.s.url.origin) headers.authorization = this.s.authorization;
      let res: Dispatcher.ResponseData;
      try {
        res = await this.agent.request({ origin: url.origin, path: url.pathname + url.search, method, headers, signal });
      } catch (e) {
        throw networkError(e, `${method} ${this.where}`);
      }
      const loc = header(res.headers, "location");
      if (res.statusCode >= 300 && res.statusCode < 400 && res.statusCode !== 304 && loc) {
        await drain(res.body);
        if (!this.s.followLocation) throw new HttpError(`${method} ${this.where}: ${res.statusCode} redirect to ${loc} (followlocation=false)`, false, res.statusCode);
        if (hops >= MAX_REDIRECTS) throw new HttpError(`${method} ${this.where}: more than ${MAX_REDIRECTS} redirects`, false);
        const next = new URL(loc, url);
        const scheme = next.protocol.replace(/:$/, "");
        if (!this.s.protocols.has(scheme)) throw new HttpError(`${method} ${this.where}: redirect to ${scheme}: refused (protocols=)`, false);
        this.debug(`curl: ${method} ${url} -> ${res.statusCode} ${next}`);
        url = next;
        continue;
      }
      return res;
    }
  }

  /** Run fn with retries on retryable HttpErrors, waiting 1x, 2x, 4x ... retryDelayMs. */
  private async withRetries<T>(what: string, fn: (signal: AbortSignal | undefined) => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const signal = this.s.timeoutMs > 0 ? AbortSignal.timeout(this.s.timeoutMs) : undefined;
      try {
        return await fn(signal);
      } catch (e) {
        const err = e instanceof HttpError ? e : networkError(e, what);
        if (!err.retryable || attempt >= this.s.retries || this.closed) throw err;
        const delay = Math.min(this.s.retryDelayMs * 2 ** attempt, 10_000);
        this.debug(`curl: ${err.message}; retry ${attempt + 1} of ${this.s.retries} in ${delay} ms`);
        await sleep(delay);
      }
    }
  }

  /**
   * The size of the resource, from a ranged GET of its first byte
   * (Content-Range: bytes 0-0/SIZE), which also proves that byte ranges
   * work; HEAD (Content-Length with Accept-Ranges) only when that GET says
   * nothing usable. GET first because undici closes the connection after
   * every HEAD, and some servers (signed URLs) refuse HEAD.
   */
  async size(): Promise<number> {
    return this.withRetries(`size of ${this.where}`, async (signal) => {
      const get = await this.send("GET", { range: "bytes=0-0" }, signal);
      const cr = header(get.headers, "content-range");
      if (get.statusCode === 206 || get.statusCode === 416) {
        await drain(get.body);
        const m = cr && /^bytes\s+(?:[0-9]+-[0-9]+|\*)\/([0-9]+)$/i.exec(cr.trim());
        if (m) return Number(m[1]);
        return this.sizeFromHead(signal);
      }
      await release(get);
      if (get.statusCode >= 200 && get.statusCode < 300) {
        throw new HttpError(`${this.where}: the server does not support byte range requests (it answered ${statusLine(get.statusCode)} to a Range request)`, false);
      }
      throw new HttpError(`GET ${this.where}: ${statusLine(get.statusCode)}`, RETRY_STATUS.has(get.statusCode), get.statusCode);
    });
  }

  private async sizeFromHead(signal: AbortSignal | undefined): Promise<number> {
    const head = await this.send("HEAD", {}, signal);
    await head.body.text().catch(() => "");
    const len = header(head.headers, "content-length");
    if (head.statusCode >= 200 && head.statusCode < 300 && len !== undefined && /^[0-9]+$/.test(len)) return Number(len);
    throw new HttpError(`HEAD ${this.where}: ${head.statusCode < 300 ? "no Content-Length" : statusLine(head.statusCode)}`, RETRY_STATUS.has(head.statusCode), head.statusCode);
  }

  /**
   * Fill buf with the bytes at offset: a ranged GET whose body is copied
   * into buf as it arrives (undici's dispatch handler: no stream per
   * response on this hot path). A body cut off resumes where it stopped.
   */
  async read(buf: Buffer, offset: number): Promise<void> {
    const state = { got: 0 };
    const end = offset + buf.length - 1;
    await this.withRetries(`GET ${this.where}`, async (signal) => {
      let url = this.s.url;
      for (let hops = 0; ; hops++) {
        const from = offset + state.got;
        const r = await this.rangeGet(url, from, end, buf, state, signal);
        if (r.location !== undefined) {
          if (!this.s.followLocation) throw new HttpError(`GET ${this.where}: ${r.status} redirect to ${r.location} (followlocation=false)`, false, r.status);
          if (hops >= MAX_REDIRECTS) throw new HttpError(`GET ${this.where}: more than ${MAX_REDIRECTS} redirects`, false);
          const next = new URL(r.location, url);
          const scheme = next.protocol.replace(/:$/, "");
          if (!this.s.protocols.has(scheme)) throw new HttpError(`GET ${this.where}: redirect to ${scheme}: refused (protocols=)`, false);
          url = next;
          continue;
        }
        if (state.got < buf.length) {
          throw new HttpError(`GET ${this.where}: the body ended after ${state.got} of ${buf.length} bytes`, true);
        }
        return;
      }
    });
  }

  /** One ranged GET to url; resolves when the answer is complete (a redirect: with its location). */
  private rangeGet(
    url: URL, from: number, end: number, buf: Buffer, state: { got: number }, signal: AbortSignal | undefined,
  ): Promise<{ status: number; location?: string }> {
    const headers: Record<string, string | string[]> = { ...this.s.headers, range: `bytes=${from}-${end}` };
    if (this.s.authorization && url.origin === this.s.url.origin) headers.authorization = this.s.authorization;
    const where = this.where;
    return new Promise((resolve, reject) => {
      let status = 0;
      let location: string | undefined;
      let failure: HttpError | undefined;
      let copying = false;
      const got0 = state.got;
      let ctl: Dispatcher.DispatchController | undefined;
      // timeout=: the attempt's signal aborts the request (then it is retried).
      const onAbort = () => ctl?.abort(signal!.reason as Error);
      signal?.addEventListener("abort", onAbort, { once: true });
      const handler: Dispatcher.DispatchHandler = {
        onRequestStart(controller) {
          ctl = controller;
          if (signal?.aborted) controller.abort(signal.reason as Error);
        },
        onResponseStart(controller, statusCode, h) {
          status = statusCode;
          const loc = header(h, "location");
          if (statusCode >= 300 && statusCode < 400 && statusCode !== 304 && loc) {
            location = loc;
            return;
          }
          if (statusCode !== 206) {
            failure = statusCode >= 200 && statusCode < 300
              ? new HttpError(`GET ${where}: the server ignored the Range header (${statusLine(statusCode)})`, false)
              : new HttpError(`GET ${where} bytes ${from}-${end}: ${statusLine(statusCode)}`, RETRY_STATUS.has(statusCode), statusCode);
            // A whole resource is not worth reading to its end; an error page is.
            if (statusCode < 300) controller.abort(failure);
            return;
          }
          const cr = header(h, "content-range");
          const m = cr && /^bytes\s+([0-9]+)-([0-9]+)\//i.exec(cr.trim());
          if (!m || Number(m[1]) !== from || Number(m[2]) > end) {
            failure = new HttpError(`GET ${where}: asked for bytes ${from}-${end}, got Content-Range ${cr ?? "none"}`, false);
            controller.abort(failure);
            return;
          }
          copying = true;
        },
        onResponseData(controller, chunk) {
          if (!copying) return;
          if (state.got + chunk.length > buf.length) {
            copying = false;
            failure = new HttpError(`GET ${where}: the server sent more than the ${buf.length} bytes asked for`, false);
            controller.abort(failure);
            return;
          }
          chunk.copy(buf, state.got);
          state.got += chunk.length;
        },
        onResponseEnd() {
          signal?.removeEventListener("abort", onAbort);
          if (failure) reject(failure);
          else resolve({ status, location });
        },
        onResponseError(_controller, err) {
          signal?.removeEventListener("abort", onAbort);
          reject(failure ?? networkError(err, `GET ${where} bytes ${from}-${end} (after ${state.got - got0} bytes)`));
        },
      };
      this.agent.dispatch({ origin: url.origin, path: url.pathname + url.search, method: "GET", headers }, handler);
    });
  }
}

