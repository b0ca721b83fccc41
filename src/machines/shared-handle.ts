// The refcounted shared context a filter opens into the layer below: one
// handle for the whole server lifetime, acquired and released by any
// number of client connections, opened no earlier than after fork, closed
// no later than unload, and drained (no in-flight request lost) before it
// closes.
//
//   dormant --AFTER_FORK--> idle --ACQUIRE--> opening --(opened)--> open
//   open --RELEASE (last, closeOnLastRelease) / UNLOAD--> closing
//   closing --(closed)--> idle | opening (acquirers waited) | closed (unloading)
//
// `closed` is terminal but not a final state: it must still answer ACQUIRE
// (rejected: "after unload") and late RELEASEs of references that were held
// across unload, which an XState final state (actor done) could not.
//
// Opening and closing are invoked effects (openHandle, drainAndClose) and
// the resolve/reject actions are the runner's (src/backend/shared-handle.ts),
// supplied with machine.provide(). refs + waiters never exceed
// context.maxRefs, which keeps graph walks finite.
import { and, assign, not, setup } from "xstate";
import { declaredAction, declaredActor } from "./effects.js";

export interface SharedHandleInput {
  /** Close the handle when the last reference is released (else keep it until unload). */
  closeOnLastRelease?: boolean;
  /** Bound on refs + waiters; further acquirers are rejected. */
  maxRefs?: number;
}

export interface SharedHandleContext {
  /** References granted and not yet released. */
  refs: number;
  /** Acquirers waiting for the handle to open. */
  waiters: number;
  closeOnLastRelease: boolean;
  /** UNLOAD was received: the next stop is `closed`. */
  unloading: boolean;
  maxRefs: number;
}

export type SharedHandleEvent =
  | { type: "AFTER_FORK" }
  | { type: "ACQUIRE" }
  | { type: "RELEASE" }
  | { type: "UNLOAD" };

/** Default bound on refs + waiters when none is given. */
export const DEFAULT_MAX_REFS = 0x7fffffff;

export type RejectReason = "before afterFork" | "after unload" | "too many references";

const setupShared = setup({
  types: {
    context: {} as SharedHandleContext,
    events: {} as SharedHandleEvent,
    input: {} as SharedHandleInput | undefined,
  },
  guards: {
    hasRoom: ({ context }) => context.refs + context.waiters < context.maxRefs,
    hasRefs: ({ context }) => context.refs > 0,
    hasWaiters: ({ context }) => context.waiters > 0,
    isLastRef: ({ context }) => context.refs === 1,
    closeOnLastRelease: ({ context }) => context.closeOnLastRelease,
    isUnloading: ({ context }) => context.unloading,
  },
  actions: {
    // ---- bookkeeping (assign; not meant to be overridden)
    addWaiter: assign({ waiters: ({ context }) => context.waiters + 1 }),
    clearWaiters: assign({ waiters: 0 }),
    grantWaiters: assign({ refs: ({ context }) => context.refs + context.waiters, waiters: 0 }),
    addRef: assign({ refs: ({ context }) => context.refs + 1 }),
    dropRef: assign({ refs: ({ context }) => context.refs - 1 }),
    markUnloading: assign({ unloading: true }),
    // ---- side effects (the runner provides these)
    /** The acquirer of this ACQUIRE waits for the open. */
    queueAcquire: declaredAction("queueAcquire"),
    /** Grant this ACQUIRE the open handle now. */
    resolveAcquire: declaredAction("resolveAcquire"),
    /** Refuse this ACQUIRE. */
    rejectAcquire: declaredAction<{ reason: RejectReason }>("rejectAcquire"),
    /** Grant every waiting acquirer the handle just opened. */
    resolveWaiters: declaredAction("resolveWaiters"),
    /** Refuse every waiting acquirer (open failed, or unload came first). */
    rejectWaiters: declaredAction<{ reason: string }>("rejectWaiters"),
    /** RELEASE without a reference: a caller bug, reported, state unchanged. */
    warnBadRelease: declaredAction("warnBadRelease"),
    /** close() failed: report it (the handle is gone either way). */
    reportCloseError: declaredAction("reportCloseError"),
  },
  actors: {
    /** Open (and prepare) the context below. */
    openHandle: declaredActor("openHandle"),
    /** Wait for in-flight requests, then finalize and close it. */
    drainAndClose: declaredActor("drainAndClose"),
  },
});

const reject = (reason: RejectReason) => ({ type: "rejectAcquire", params: { reason } }) as const;

/** RELEASE outside `open`: references held across unload may still be released. */
const releaseHeld = [
  { guard: "hasRefs", actions: "dropRef" },
  { actions: "warnBadRelease" },
] as const;

/** ACQUIRE while the handle is not usable yet (opening, closing). */
const acquireLater = [
  { guard: "isUnloading", actions: reject("after unload") },
  { guard: "hasRoom", actions: ["addWaiter", "queueAcquire"] },
  { actions: reject("too many references") },
] as const;

/** After close (CLOSED or CLOSE_FAILED): where to go next. */
const afterClose = (extra: readonly "reportCloseError"[]) =>
  [
    { guard: "isUnloading", target: "closed", actions: [...extra] },
    { guard: "hasWaiters", target: "opening", actions: [...extra] },
    { target: "idle", actions: [...extra] },
  ] as const;

export const sharedHandleMachine = setupShared.createMachine({
  id: "sharedHandle",
  description: "A refcounted context into the layer below, shared by all connections.",
  context: ({ input }) => ({
    refs: 0,
    waiters: 0,
    closeOnLastRelease: input?.closeOnLastRelease ?? false,
    unloading: false,
    maxRefs: Math.max(1, input?.maxRefs ?? DEFAULT_MAX_REFS),
  }),
  initial: "dormant",
  states: {
    dormant: {
      description: "Before afterFork: the layer below may not be opened yet.",
      on: {
        AFTER_FORK: { target: "idle" },
        ACQUIRE: { actions: reject("before afterFork") },
        RELEASE: { actions: "warnBadRelease" },
        UNLOAD: { target: "closed", actions: "markUnloading" },
      },
    },
    idle: {
      description: "Allowed to open; nothing open.",
      on: {
        ACQUIRE: { target: "opening", actions: ["addWaiter", "queueAcquire"] },
        RELEASE: [...releaseHeld],
        UNLOAD: { target: "closed", actions: "markUnloading" },
      },
    },
    opening: {
      invoke: {
        id: "openHandle",
        src: "openHandle",
        onDone: [
          {
            guard: "isUnloading",
            target: "closing",
            actions: [{ type: "rejectWaiters", params: { reason: "unloaded while opening" } }, "clearWaiters"],
          },
          { target: "open", actions: ["grantWaiters", "resolveWaiters"] },
        ],
        onError: [
          {
            guard: "isUnloading",
            target: "closed",
            actions: [{ type: "rejectWaiters", params: { reason: "open failed" } }, "clearWaiters"],
          },
          { target: "idle", actions: [{ type: "rejectWaiters", params: { reason: "open failed" } }, "clearWaiters"] },
        ],
      },
      on: {
        ACQUIRE: [...acquireLater],
        RELEASE: [...releaseHeld],
        UNLOAD: { actions: "markUnloading" },
      },
    },
    open: {
      description: "Open, refs references held.",
      on: {
        ACQUIRE: [{ guard: not("hasRoom"), actions: reject("too many references") }, { actions: ["addRef", "resolveAcquire"] }],
        RELEASE: [
          { guard: and(["isLastRef", "closeOnLastRelease"]), target: "closing", actions: "dropRef" },
          { guard: "hasRefs", actions: "dropRef" },
          { actions: "warnBadRelease" },
        ],
        UNLOAD: { target: "closing", actions: "markUnloading" },
      },
    },
    closing: {
      description: "Draining in-flight requests, then closing.",
      invoke: {
        id: "drainAndClose",
        src: "drainAndClose",
        onDone: [...afterClose([])],
        onError: [...afterClose(["reportCloseError"])],
      },
      on: {
        ACQUIRE: [...acquireLater],
        RELEASE: [...releaseHeld],
        UNLOAD: {
          actions: ["markUnloading", { type: "rejectWaiters", params: { reason: "unloading" } }, "clearWaiters"],
        },
      },
    },
    closed: {
      description: "Terminal (after unload): every ACQUIRE is refused.",
      tags: ["terminal"],
      on: {
        ACQUIRE: { actions: reject("after unload") },
        RELEASE: [...releaseHeld],
      },
    },
  },
});
