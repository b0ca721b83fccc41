// An LRU of decoded blocks by index, holding at most `depth` of them.
// Concurrent requests for the same block share one decode (the promise is
// cached), so a block is decoded once while it stays cached, whichever
// clients ask for it. A failed decode is forgotten, so a later read tries
// again (and fails again, for a corrupt block).

export class BlockCache<T> {
  private readonly map = new Map<number, Promise<T>>();

  constructor(private readonly depth: number) {}

  get(i: number, load: () => Promise<T>): Promise<T> {
    const hit = this.map.get(i);
    if (hit) {
      // Most recently used goes last.
      this.map.delete(i);
      this.map.set(i, hit);
      return hit;
    }
    const p = load();
    this.map.set(i, p);
    p.catch(() => {
      if (this.map.get(i) === p) this.map.delete(i);
    });
    while (this.map.size > this.depth) {
      // An evicted decode still in flight completes for those awaiting it.
      this.map.delete(this.map.keys().next().value!);
    }
    return p;
  }

  clear(): void {
    this.map.clear();
  }
}
