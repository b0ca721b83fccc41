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

/** Ask for a trim soon (coalesced; each step skipped where unavailable). */
export function trimSoon(): void {
  if (timer) return;
  const wait = Math.max(0, last + MIN_INTERVAL_MS - Date.now()) + 200;
  timer = setTimeout(() => {
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
