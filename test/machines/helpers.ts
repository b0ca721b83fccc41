// Shared test helpers: deferred promises, a flush, and a harness around the
// REAL SharedHandle runner with fake open/close functions the test settles.
import { SharedHandle } from "../../src/backend/shared-handle.js";

export interface Deferred<T> {
  promise: Promise<T>;
  resolve(v: T): void;
  reject(e: unknown): void;
}

export function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Let every pending promise callback run (open/close chains are a few ticks deep). */
export function flush(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

export interface FakeHandle {
  id: number;
  closed: boolean;
}

export interface Outcome<T> {
  status: "pending" | "resolved" | "rejected";
  value?: T;
  error?: Error;
  /** For acquires: was the handle already closed when it was handed out? */
  handedClosed?: boolean;
}

function watch<T>(p: Promise<T>, onResolve?: (v: T) => Partial<Outcome<T>>): Outcome<T> {
  const o: Outcome<T> = { status: "pending" };
  p.then(
    (v) => Object.assign(o, { status: "resolved", value: v }, onResolve?.(v)),
    (e: Error) => Object.assign(o, { status: "rejected", error: e }),
  );
  return o;
}

/** The real runner with controllable fake open()/close() and a log of what happened. */
export class Harness {
  readonly sh: SharedHandle<FakeHandle>;
  /** Events in order: "open", "close#ID", "request-done", ... */
  readonly log: string[] = [];
  readonly warnings: string[] = [];
  readonly acquires: Outcome<FakeHandle>[] = [];
  readonly unloads: Outcome<void>[] = [];
  opens = 0;
  openFails = 0;
  closes = 0;
  closeFails = 0;
  pendingOpen: Deferred<FakeHandle> | null = null;
  pendingClose: Deferred<void> | null = null;
  lastHandle: FakeHandle | null = null;
  private nextId = 1;

  constructor(opts: { closeOnLastRelease?: boolean; maxRefs?: number } = {}) {
    this.sh = new SharedHandle<FakeHandle>({
      name: "test",
      closeOnLastRelease: opts.closeOnLastRelease,
      maxRefs: opts.maxRefs,
      log: (m) => this.warnings.push(m),
      open: () => {
        this.opens++;
        this.log.push("open");
        this.pendingOpen = deferred();
        return this.pendingOpen.promise;
      },
      close: (h) => {
        this.closes++;
        this.log.push(`close#${h.id}`);
        this.pendingClose = deferred();
        return this.pendingClose.promise.then(() => {
          h.closed = true;
        });
      },
    });
  }

  acquire(): Outcome<FakeHandle> {
    const o = watch(this.sh.acquire(), (h) => ({ handedClosed: h.closed }));
    this.acquires.push(o);
    return o;
  }

  unload(): Outcome<void> {
    const o = watch(this.sh.unload());
    this.unloads.push(o);
    return o;
  }

  /** A tracked request that stays in flight until the returned function is called. */
  request(): () => Promise<void> {
    const d = deferred<void>();
    // The request itself logs its completion; the runner sees it settle after that.
    void this.sh.track(d.promise.then(() => void this.log.push("request-done")));
    return async () => {
      d.resolve();
      await flush();
    };
  }

  async succeedOpen(): Promise<FakeHandle> {
    await flush();
    if (!this.pendingOpen) throw new Error("no open in progress");
    const h: FakeHandle = { id: this.nextId++, closed: false };
    const d = this.pendingOpen;
    this.pendingOpen = null;
    this.lastHandle = h;
    d.resolve(h);
    await flush();
    return h;
  }

  async failOpen(message = "disk on fire"): Promise<void> {
    await flush();
    if (!this.pendingOpen) throw new Error("no open in progress");
    const d = this.pendingOpen;
    this.pendingOpen = null;
    this.openFails++;
    d.reject(new Error(message));
    await flush();
  }

  async succeedClose(): Promise<void> {
    await flush();
    if (!this.pendingClose) throw new Error("no close in progress");
    const d = this.pendingClose;
    this.pendingClose = null;
    d.resolve();
    await flush();
  }

  async failClose(message = "close boom"): Promise<void> {
    await flush();
    if (!this.pendingClose) throw new Error("no close in progress");
    const d = this.pendingClose;
    this.pendingClose = null;
    this.closeFails++;
    d.reject(new Error(message));
    await flush();
  }

  count(status: Outcome<unknown>["status"]): number {
    return this.acquires.filter((o) => o.status === status).length;
  }
}
