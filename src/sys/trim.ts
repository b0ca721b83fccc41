// Giving memory back to the system. Socket buffers and replies live in
// ArrayBuffers outside the JavaScript heap, freed only when the garbage
// collector runs, and glibc keeps freed 64 KiB pieces in its arenas: after
// a flood of connections has come and gone an idle server would stay as
// large as it ever was. So once connections close (at most once a second),
// a full collection frees the buffers they held, and malloc_trim(0) returns
// the free pages of every arena.

import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { libc } from "./libc.js";

const MIN_INTERVAL_MS = 1000;
let last = 0;
let timer: NodeJS.Timeout | null = null;
let gc: (() => void) | null | undefined;

/** The collector, exposed once (node's --expose-gc, set at run time). */
function collector(): (() => void) | null {
  if (gc !== undefined) return gc;
  try {
    setFlagsFromString("--expose-gc");
    gc = runInNewContext("gc") as () => void;
  } catch {
    gc = null;
  }
  return gc;
}

/**
 * One full collection now, where the collector can be reached. Called once
 * a thread has loaded everything and before its first client: the first
 * mark-compact of V8's young process (its startup heap reaching its first
 * limit) came in the middle of the first client's copy otherwise, about
 * 10% of the server's CPU in that copy.
 */
export function collectStartupHeap(): void {
  collector()?.();
}

/** A trim waits this long at most for the thread to have no client. */
const MAX_DEFER_MS = 10_000;
let firstAsked = 0;

/**
 * Ask for a trim soon (coalesced; each step skipped where unavailable).
 * While `busy()` says clients are being served it waits (up to
 * MAX_DEFER_MS): a full collection in the middle of a copy costs it more
 * than the memory is worth (nbdcopy closes and opens its connections
 * between the copies of a script).
 */
export function trimSoon(busy?: () => boolean): void {
  if (timer) return;
  if (firstAsked === 0) firstAsked = Date.now();
  const wait = Math.max(0, last + MIN_INTERVAL_MS - Date.now()) + 200;
  timer = setTimeout(() => {
    if (busy?.() && Date.now() - firstAsked < MAX_DEFER_MS) {
      timer = null;
      trimSoon(busy);
      return;
    }
    firstAsked = 0;
    last = Date.now();
    const gc = collector();
    gc?.();
    // Backing stores are released by the collection after the one that found them unreachable.
    timer = setTimeout(() => {
      timer = null;
      gc?.();
      libc()?.mallocTrim?.(0);
    }, 50);
    timer.unref();
  }, wait);
  timer.unref();
}
