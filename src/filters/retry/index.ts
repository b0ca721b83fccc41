// retry filter (nbdkit-retry-filter): when a request fails, close the
// context below, open a new one (after a delay, growing exponentially by
// default) and try the request again, up to `retries` times.
//
// The filter's context below is one it opens itself (an exclusive
// filter-owned context, lower.open) and binds with use(); on reopen it is
// replaced, so every callback here works on h.ctx, never on the `next`
// the stack passes in (that is the first context, possibly closed since).
//
// Requests of one connection may run concurrently: when several fail at
// once, the first to finish its delay reopens and the others retry on the
// new context (a generation number tells them it was replaced). A context
// is closed only after the requests still running on it have settled.

import { parseBool } from "../../backend/size.js";
import {
  FLAG_FAST_ZERO, FLAG_FUA, NbdError,
  type BlockSize, type CacheMode, type Context, type Extent, type Filter, type FuaMode, type LowerBackend,
} from "../../backend/types.js";
import { NBD_EIO, NBD_ENOSPC, NBD_ENOTSUP, NBD_EPERM, NBD_ESHUTDOWN } from "../../protocol/constants.js";

export interface RetryHandle {
  /** The context below in use now (null after a failed reopen). */
  ctx: Context | null;
  readonly: boolean;
  exportName: string;
  lower: LowerBackend;
  /** Bumped on every reopen: a request that started on an older one does not reopen again. */
  gen: number;
  /** How many times the context below was reopened. */
  reopens: number;
  /** Requests running on the current context (drained before it is closed). */
  inflight: Set<Promise<unknown>>;
  reopening: Promise<void> | null;
  closed: boolean;
}

/** Fail the request at once, without retrying. */
class NoRetry {
  constructor(readonly err: unknown) {}
}

const EROFS = (what: string) => new NbdError(NBD_EPERM, `retry: ${what}: read-only`);

export default function createFilter(): Filter<RetryHandle> {
  let retries = 5;
  let delaySeconds = 2;
  let exponential = true;
  let forceReadonly = false;

  const sleep = (s: number) => new Promise<void>((r) => setTimeout(r, s * 1000));

  async function openBelow(h: Pick<RetryHandle, "lower" | "readonly" | "exportName">, reopen: boolean): Promise<Context> {
    return h.lower.open({ readonly: h.readonly || (reopen && forceReadonly), exportName: h.exportName });
  }

  interface Backoff {
    retry: number;
    delay: number;
  }

  /** nbdkit's do_retry, first half: may we retry (after sleeping)? */
  async function backoff(b: Backoff): Promise<boolean> {
    if (b.retry >= retries) return false;
    await sleep(b.delay);
    b.retry++;
    if (exponential) b.delay *= 2;
    return true;
  }

  /** Second half: replace the context below, unless another request already did. */
  async function reopen(h: RetryHandle, gen: number): Promise<void> {
    while (h.reopening) await h.reopening;
    if (h.gen !== gen || h.closed) return;
    h.gen++;
    h.reopens++;
    h.reopening = (async () => {
      const old = h.ctx;
      h.ctx = null;
      const busy = [...h.inflight];
      h.inflight = new Set();
      if (old) {
        await Promise.allSettled(busy);
        // A failed finalize/close: the old context is gone either way.
        await h.lower.close(old).catch(() => {});
      }
      try {
        h.ctx = await openBelow(h, true);
      } catch {
        h.ctx = null; // the next attempt fails with ESHUTDOWN and retries the open
      }
    })().finally(() => {
      h.reopening = null;
    });
    await h.reopening;
  }

  /** Run op on the current context; on failure back off, reopen and run it again. */
  async function withRetry<T>(h: RetryHandle, op: (ctx: Context) => Promise<T>): Promise<T> {
    const b: Backoff = { retry: 0, delay: delaySeconds };
    for (;;) {
      const gen = h.gen;
      let err: unknown;
      try {
        const ctx = h.ctx;
        if (!ctx) throw new NbdError(NBD_ESHUTDOWN, "retry: the context below could not be reopened");
        const p = op(ctx);
        const set = h.inflight;
        set.add(p);
        try {
          return await p;
        } finally {
          set.delete(p);
        }
      } catch (e) {
        if (e instanceof NoRetry) throw e.err;
        err = e;
      }
      if (h.closed || !(await backoff(b))) throw err;
      await reopen(h, gen);
    }
  }

  async function validRange(ctx: Context, count: number, offset: number, write: boolean): Promise<void> {
    if (offset + count > (await ctx.getSize())) {
      throw new NbdError(write ? NBD_ENOSPC : NBD_EIO, "retry: request beyond the end of the reopened export");
    }
  }

  function noReadonlyRetry(h: RetryHandle, what: string): void {
    if (h.reopens > 0 && forceReadonly) throw new NoRetry(EROFS(what));
  }

  async function checkFua(ctx: Context, flags: number): Promise<void> {
    if (flags & FLAG_FUA && (await ctx.canFua()) === "none") throw new NbdError(NBD_EIO, "retry: FUA not supported after reopen");
  }

  function cur(h: RetryHandle): Context {
    if (!h.ctx) throw new NbdError(NBD_ESHUTDOWN, "retry: no context below");
    return h.ctx;
  }

  return {
    name: "retry",
    version: "1.0.0",
    longname: "nbdstate retry filter",
    description: "Reopen the plugin's context when a request fails, and retry the request.",
    configHelp:
      "retries=<N>              Number of retries (default 5).\n" +
      "retry-delay=<N>          Seconds to wait before retry (default 2, fractions allowed).\n" +
      "retry-exponential=yes|no Exponential back-off (default yes).\n" +
      "retry-readonly=yes|no    Force read-only on failure (default no).",

    config(next, key, value) {
      const bool = () => {
        try {
          return parseBool(value);
        } catch (e) {
          throw new Error(`retry: ${key}: ${(e as Error).message}`);
        }
      };
      switch (key) {
        case "retries":
          if (!/^\s*[0-9]+\s*$/.test(value)) throw new Error(`retry: retries: not a number of retries: '${value}'`);
          retries = Number(value);
          return;
        case "retry-delay": {
          const n = /^\s*[0-9]*\.?[0-9]+\s*$/.test(value) ? Number(value) : NaN;
          if (!Number.isFinite(n) || n < 0) throw new Error(`retry: retry-delay: not a number of seconds: '${value}'`);
          delaySeconds = n;
          return;
        }
        case "retry-exponential":
          exponential = bool();
          return;
        case "retry-readonly":
          forceReadonly = bool();
          return;
        default:
          return next(key, value);
      }
    },

    async open(a) {
      const h: RetryHandle = {
        ctx: null,
        readonly: a.readonly,
        exportName: a.exportName,
        lower: a.lower,
        gen: 0,
        reopens: 0,
        inflight: new Set(),
        reopening: null,
        closed: false,
      };
      try {
        h.ctx = await openBelow(h, false);
      } catch (first) {
        // As nbdkit: the first open is retried too (the handle must not be
        // returned without a context, the client asks its size next).
        let err = first;
        const b: Backoff = { retry: 0, delay: delaySeconds };
        while (!h.ctx) {
          if (!(await backoff(b))) throw err;
          h.reopens++;
          try {
            h.ctx = await openBelow(h, true);
          } catch (e) {
            err = e;
          }
        }
      }
      a.use(h.ctx);
      return h;
    },

    async close(h) {
      h.closed = true;
      while (h.reopening) await h.reopening;
      const ctx = h.ctx;
      h.ctx = null;
      if (ctx) await h.lower.close(ctx);
    },

    // Capabilities of the current context (the stack asks them once, after open).
    getSize: (_n, h) => cur(h).getSize(),
    canWrite: (_n, h) => cur(h).canWrite(),
    canFlush: (_n, h) => cur(h).canFlush(),
    isRotational: (_n, h) => cur(h).isRotational(),
    canTrim: (_n, h) => cur(h).canTrim(),
    canZero: (_n, h) => cur(h).canZero(),
    canFastZero: (_n, h) => cur(h).canFastZero(),
    canFua: (_n, h): Promise<FuaMode> => cur(h).canFua(),
    canMultiConn: (_n, h) => cur(h).canMultiConn(),
    canExtents: (_n, h) => cur(h).canExtents(),
    canCache: (_n, h): Promise<CacheMode> => cur(h).canCache(),
    blockSize: (_n, h): Promise<BlockSize | null> => cur(h).blockSize(),
    exportDescription: (_n, h) => cur(h).exportDescription(),

    pread(_n, h, buf, offset, flags) {
      return withRetry(h, async (ctx) => {
        await validRange(ctx, buf.length, offset, false);
        await ctx.pread(buf, offset, flags);
      });
    },

    pwrite(_n, h, buf, offset, flags) {
      return withRetry(h, async (ctx) => {
        noReadonlyRetry(h, "pwrite");
        await validRange(ctx, buf.length, offset, true);
        if (!(await ctx.canWrite())) throw EROFS("pwrite");
        await checkFua(ctx, flags);
        await ctx.pwrite(buf, offset, flags);
      });
    },

    trim(_n, h, count, offset, flags) {
      return withRetry(h, async (ctx) => {
        noReadonlyRetry(h, "trim");
        await validRange(ctx, count, offset, true);
        if (!(await ctx.canTrim())) throw EROFS("trim");
        await checkFua(ctx, flags);
        await ctx.trim(count, offset, flags);
      });
    },

    zero(_n, h, count, offset, flags) {
      return withRetry(h, async (ctx) => {
        noReadonlyRetry(h, "zero");
        await validRange(ctx, count, offset, true);
        if (!(await ctx.canZero())) throw EROFS("zero");
        await checkFua(ctx, flags);
        if (flags & FLAG_FAST_ZERO) {
          if (!(await ctx.canFastZero())) throw new NoRetry(new NbdError(NBD_ENOTSUP, "retry: fast zero not supported"));
          try {
            await ctx.zero(count, offset, flags);
          } catch (e) {
            // "Not fast": the client falls back to writing; retrying is pointless.
            if (e instanceof NbdError && e.errno === NBD_ENOTSUP) throw new NoRetry(e);
            throw e;
          }
          return;
        }
        await ctx.zero(count, offset, flags);
      });
    },

    flush(_n, h, flags) {
      return withRetry(h, async (ctx) => {
        if (!(await ctx.canFlush())) throw new NbdError(NBD_EIO, "retry: flush not supported after reopen");
        await ctx.flush(flags);
      });
    },

    cache(_n, h, count, offset, flags) {
      return withRetry(h, async (ctx) => {
        await validRange(ctx, count, offset, false);
        if ((await ctx.canCache()) === "none") throw new NbdError(NBD_EIO, "retry: cache not supported after reopen");
        await ctx.cache(count, offset, flags);
      });
    },

    extents(_n, h, count, offset, flags): Promise<Extent[]> {
      return withRetry(h, async (ctx) => {
        await validRange(ctx, count, offset, false);
        return ctx.extents(count, offset, flags);
      });
    },
  };
}
