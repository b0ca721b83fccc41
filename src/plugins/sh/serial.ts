// A FIFO lock for promises: how the plugin honours the script's thread
// model (nbdstate itself never waits for a request before starting the next).

export class Serial {
  private tail: Promise<unknown> = Promise.resolve();

  /** Run fn once everything queued before it has settled. */
  run<T>(fn: () => Promise<T>): Promise<T> {
    const r = this.tail.then(fn);
    this.tail = r.catch(() => {});
    return r;
  }

  /** Wait for the lock and hold it until the returned release is called. */
  acquire(): Promise<() => void> {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const prev = this.tail;
    this.tail = prev.then(() => held);
    return prev.then(() => release);
  }
}
