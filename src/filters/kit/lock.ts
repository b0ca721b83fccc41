// Async locks for filters that serialize requests (noparallel) or must
// keep a read-modify-write from interleaving with other writes (blocksize).
//
// A free lock is taken synchronously: `run(fn)` then costs one call to fn
// and one `.finally`, with no extra promise in between.

type Waiter = { exclusive: boolean; go: () => void };

function runHeld<T>(fn: () => Promise<T>, release: () => void): Promise<T> {
  let p: Promise<T>;
  try {
    p = fn();
  } catch (e) {
    release();
    return Promise.reject(e);
  }
  return p.finally(release);
}

/** Readers-writer lock, fair: once a writer waits, later readers queue behind it. */
export class RwLock {
  private readers = 0;
  private writer = false;
  private queue: Waiter[] = [];
  private head = 0;

  /** Give back a shared hold taken with tryShared (bound: pass it to .finally). */
  readonly releaseShared = (): void => {
    this.readers--;
    this.pump();
  };
  private readonly releaseExclusive = (): void => {
    this.writer = false;
    this.pump();
  };

  /**
   * Take a shared hold now if nobody holds or waits for the lock alone
   * (true), for callers that then run their request and `.finally(releaseShared)`
   * without building a closure; false: use shared().
   */
  tryShared(): boolean {
    if (this.writer || this.head !== this.queue.length) return false;
    this.readers++;
    return true;
  }

  /** Run fn while holding the lock shared (with other shared holders). */
  shared<T>(fn: () => Promise<T>): Promise<T> {
    if (!this.writer && this.head === this.queue.length) {
      this.readers++;
      return runHeld(fn, this.releaseShared);
    }
    return this.wait(false).then(() => runHeld(fn, this.releaseShared));
  }

  /** Run fn while holding the lock alone. */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    if (!this.writer && this.readers === 0 && this.head === this.queue.length) {
      this.writer = true;
      return runHeld(fn, this.releaseExclusive);
    }
    return this.wait(true).then(() => runHeld(fn, this.releaseExclusive));
  }

  /** Whether anyone holds or waits for the lock (tests). */
  get busy(): boolean {
    return this.writer || this.readers > 0 || this.head < this.queue.length;
  }

  private wait(exclusive: boolean): Promise<void> {
    return new Promise((go) => this.queue.push({ exclusive, go }));
  }

  private pump(): void {
    while (this.head < this.queue.length) {
      const w = this.queue[this.head]!;
      if (w.exclusive) {
        if (this.writer || this.readers > 0) break;
        this.writer = true;
      } else {
        if (this.writer) break;
        this.readers++;
      }
      this.head++;
      w.go();
      if (w.exclusive) break;
    }
    if (this.head === this.queue.length) {
      this.queue.length = 0;
      this.head = 0;
    } else if (this.head > 1024) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }
}

/** Mutual exclusion: one holder at a time, first come first served. */
export class Mutex {
  private readonly lock = new RwLock();

  run<T>(fn: () => Promise<T>): Promise<T> {
    return this.lock.exclusive(fn);
  }

  /** Take the lock for as long as the caller likes (e.g. a connection's lifetime). */
  acquire(): Promise<() => void> {
    return new Promise((resolve) => {
      void this.lock.exclusive(
        () =>
          new Promise<void>((done) => {
            let released = false;
            resolve(() => {
              if (released) return;
              released = true;
              done();
            });
          }),
      );
    });
  }

  get busy(): boolean {
    return this.lock.busy;
  }
}
