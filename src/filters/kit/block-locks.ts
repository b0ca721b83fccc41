// Exclusive locks on ranges of block numbers, for filters that keep blocks
// of their own (cow's overlay, cache's cache) and must not let two
// requests interleave a read-modify-write of the same block.
//
// A request locks all its blocks in one synchronous step: it joins the
// queue of every block it touches and runs once it is at the head of all
// of them. Queues are ordered by the time requests joined, which is one
// global order (joining is synchronous), so the oldest waiting request is
// always at the head of all its queues: no deadlock, FIFO per block.
// Uncontended, locking costs no promise and no extra turn of the event loop.

interface Waiter {
  /** Queues in which this request is not yet at the head. */
  pending: number;
  wake: (() => void) | null;
}

export class BlockLocks {
  private queues = new Map<number, Waiter[]>();

  /**
   * Lock blocks [first, last] (inclusive). Returns null when they were all
   * free (held at once), else a promise resolved once they are held. Either
   * way, call unlock(first, last) exactly once afterwards.
   */
  lock(first: number, last: number): Promise<void> | null {
    const w: Waiter = { pending: 0, wake: null };
    for (let b = first; b <= last; b++) {
      const q = this.queues.get(b);
      if (q === undefined) this.queues.set(b, [w]);
      else {
        q.push(w);
        w.pending++;
      }
    }
    if (w.pending === 0) return null;
    return new Promise<void>((resolve) => {
      w.wake = resolve;
    });
  }

  /** Take the lock only if every block is free right now; true when taken. */
  tryLock(first: number, last: number): boolean {
    for (let b = first; b <= last; b++) if (this.queues.has(b)) return false;
    for (let b = first; b <= last; b++) this.queues.set(b, [{ pending: 0, wake: null }]);
    return true;
  }

  unlock(first: number, last: number): void {
    for (let b = first; b <= last; b++) {
      const q = this.queues.get(b)!;
      q.shift();
      if (q.length === 0) {
        this.queues.delete(b);
        continue;
      }
      const next = q[0]!;
      if (--next.pending === 0 && next.wake) next.wake();
    }
  }

  /** Whether some request holds or waits for block b. */
  busy(b: number): boolean {
    return this.queues.has(b);
  }

  /** Run fn with blocks [first, last] locked. */
  async with<T>(first: number, last: number, fn: () => Promise<T>): Promise<T> {
    const wait = this.lock(first, last);
    try {
      if (wait) await wait;
      return await fn();
    } finally {
      this.unlock(first, last);
    }
  }
}
