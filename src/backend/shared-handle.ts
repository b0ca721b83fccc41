// The runner of the shared-handle machine (src/machines/shared-handle.ts):
// one refcounted handle C into the layer below, opened on first acquire
// (no earlier than afterFork), closed on the last release (if asked) or at
// unload, and drained before it closes.
//
// The machine decides; this class only does what its named actions ask
// (call open/close, resolve or reject promises). In-flight requests are a
// plain counter (track), not an XState event per request: see the hot-path
// rule in docs/architecture.md.

import { createActor, fromPromise, type Actor, type InspectionEvent } from "xstate";
import { assertProvided } from "../machines/effects.js";
import { sharedHandleMachine, type RejectReason } from "../machines/shared-handle.js";
import { NBD_ESHUTDOWN } from "../protocol/constants.js";
import { NbdError } from "./types.js";

export interface SharedHandleOptions<C> {
  /** For messages, e.g. "memory:rw:" (layer, mode, export). */
  name: string;
  /** Open the handle (called from state `opening`). */
  open: () => Promise<C>;
  /** Close it (called from state `closing`, once in-flight requests finished). */
  close: (c: C) => Promise<void>;
  /** Close when the last reference is released; default false (keep until unload). */
  closeOnLastRelease?: boolean;
  /** Bound on references + waiting acquirers; default very large. */
  maxRefs?: number;
  /** xstate's inspection hook (for the inspector). */
  inspect?: (ev: InspectionEvent) => void;
  /** Warnings: a release without a reference, a failed close. Default process.emitWarning. */
  log?: (msg: string) => void;
}

interface Waiter<C> {
  resolve(c: C): void;
  reject(e: Error): void;
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class SharedHandle<C> {
  readonly name: string;
  private readonly opts: SharedHandleOptions<C>;
  private readonly actor: Actor<typeof sharedHandleMachine>;
  private readonly log: (msg: string) => void;
  /** The open handle (from OPENED until the close completes). */
  private handle: C | undefined;
  /** The acquirer whose ACQUIRE the machine is processing right now. */
  private current: Waiter<C> | null = null;
  private waiters: Waiter<C>[] = [];
  private unloadWaiters: Waiter<void>[] = [];
  private drainWaiters: (() => void)[] = [];
  private inflight = 0;
  private openError: unknown;
  private failure: Error | null = null;
  /** The last open or close failure, if any. */
  lastError: Error | undefined;

  constructor(opts: SharedHandleOptions<C>) {
    this.opts = opts;
    this.name = opts.name;
    this.log = opts.log ?? ((msg) => process.emitWarning(msg, { code: "NBDSTATE_SHARED_HANDLE" }));
    const machine = assertProvided(sharedHandleMachine.provide({
      actors: {
        openHandle: fromPromise(() => this.doOpen()),
        drainAndClose: fromPromise(() => this.doClose()),
      },
      actions: {
        queueAcquire: () => this.waiters.push(this.take()),
        resolveAcquire: () => this.take().resolve(this.handle as C),
        rejectAcquire: (_, p) => this.take().reject(this.refusal(p.reason)),
        resolveWaiters: () => {
          for (const w of this.waiters.splice(0)) w.resolve(this.handle as C);
        },
        rejectWaiters: (_, p) => {
          const err =
            p.reason === "open failed"
              ? new Error(`${this.name}: open failed: ${message(this.openError)}`, { cause: this.openError })
              : new NbdError(NBD_ESHUTDOWN, `${this.name}: ${p.reason}`);
          for (const w of this.waiters.splice(0)) w.reject(err);
        },
        warnBadRelease: () => this.log(`${this.name}: release without a reference (ignored)`),
        reportCloseError: () => this.log(`${this.name}: close failed: ${message(this.lastError)}`),
      },
    }));
    this.actor = createActor(machine, {
      input: { closeOnLastRelease: opts.closeOnLastRelease ?? false, maxRefs: opts.maxRefs },
      inspect: opts.inspect,
    });
    this.actor.subscribe({
      next: (snap) => {
        if (snap.value === "closed") for (const w of this.unloadWaiters.splice(0)) w.resolve();
      },
      error: (err) => this.fail(err),
    });
    this.actor.start();
  }

  /** The machine's state: dormant, idle, opening, open, closing or closed. */
  get state(): string {
    return String(this.actor.getSnapshot().value);
  }

  /** References granted and not yet released. */
  get refs(): number {
    return this.actor.getSnapshot().context.refs;
  }

  /** Acquirers waiting for the handle to open. */
  get waiting(): number {
    return this.actor.getSnapshot().context.waiters;
  }

  /** Tracked requests not yet settled. */
  get inFlight(): number {
    return this.inflight;
  }

  /** The layer below may be opened from now on. */
  afterFork(): void {
    this.actor.send({ type: "AFTER_FORK" });
  }

  /**
   * A reference to the open handle: resolves once it is open. Rejects before
   * afterFork, after unload, when the open fails (every waiting acquirer
   * gets that error; the next acquire retries), or past maxRefs.
   */
  acquire(): Promise<C> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<C>((resolve, reject) => {
      const w: Waiter<C> = { resolve, reject };
      this.current = w;
      this.actor.send({ type: "ACQUIRE" });
      if (this.current === w) {
        this.current = null;
        reject(this.failure ?? new Error(`${this.name}: acquire not handled in state ${this.state}`));
      }
    });
  }

  /** Give back one reference (a release without one is warned about and ignored). */
  release(): void {
    this.actor.send({ type: "RELEASE" });
  }

  /**
   * Count a request on the handle as in flight until it settles: closing
   * waits for every tracked request first. Returns p itself (same outcome).
   */
  track<T>(p: Promise<T>): Promise<T> {
    this.inflight++;
    return p.finally(() => {
      if (--this.inflight === 0) for (const d of this.drainWaiters.splice(0)) d();
    });
  }

  /**
   * Run fn on the handle as a tracked request, or fail it with ESHUTDOWN
   * when the handle is not open (closing, closed: the reference outlived it).
   */
  run<T>(fn: (c: C) => Promise<T>): Promise<T> {
    if (this.state !== "open") {
      return Promise.reject(new NbdError(NBD_ESHUTDOWN, `${this.name}: shared handle is ${this.state}`));
    }
    return this.track(Promise.resolve().then(() => fn(this.handle as C)));
  }

  /**
   * Drain, close (even though references may still be held: their later
   * use gets ESHUTDOWN) and refuse every later acquire. Resolves once the
   * machine is `closed`; a failed close is logged and kept in lastError.
   */
  unload(): Promise<void> {
    if (this.state === "closed") return Promise.resolve();
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<void>((resolve, reject) => {
      this.unloadWaiters.push({ resolve, reject });
      this.actor.send({ type: "UNLOAD" });
    });
  }

  // ------------------------------------------------------------ internals

  private take(): Waiter<C> {
    const w = this.current;
    if (!w) throw new Error(`${this.name}: no acquirer for this ACQUIRE`);
    this.current = null;
    return w;
  }

  private refusal(reason: RejectReason): Error {
    const text = `${this.name}: cannot acquire the shared handle ${reason}`;
    return reason === "too many references" ? new Error(text) : new NbdError(NBD_ESHUTDOWN, text);
  }

  /** Open the handle (the machine's openHandle); the machine moves on when this settles. */
  private async doOpen(): Promise<void> {
    try {
      this.handle = await this.opts.open();
    } catch (err) {
      this.openError = err;
      this.lastError = err instanceof Error ? err : new Error(message(err));
      throw err;
    }
  }

  /** Drain tracked requests, then close (the machine's drainAndClose). */
  private async doClose(): Promise<void> {
    const h = this.handle as C;
    if (this.inflight > 0) await new Promise<void>((r) => this.drainWaiters.push(r));
    try {
      await this.opts.close(h);
    } catch (err) {
      this.lastError = err instanceof Error ? err : new Error(message(err));
      throw err;
    } finally {
      this.handle = undefined;
    }
  }

  /** The actor stopped on an error: nothing will answer the pending promises. */
  private fail(err: unknown): void {
    this.failure = new Error(`${this.name}: shared handle machine failed: ${message(err)}`, { cause: err });
    const pending = [...this.waiters.splice(0), ...(this.current ? [this.current] : [])];
    this.current = null;
    for (const w of pending) w.reject(this.failure);
    for (const w of this.unloadWaiters.splice(0)) w.reject(this.failure);
  }
}
