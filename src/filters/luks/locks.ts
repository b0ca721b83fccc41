// Per-sector locks for read-modify-write of partial sectors: two writes
// to different bytes of one sector, even from different clients, are
// applied one after the other, so neither is lost.

export class SectorLocks {
  private readonly held = new Map<string, Promise<void>>();

  /** Wait for the sectors (in order, so no deadlock) and hold them until release(). */
  async acquire(exportName: string, sectors: number[]): Promise<() => void> {
    const keys = [...new Set(sectors)].sort((a, b) => a - b).map((s) => `${s}:${exportName}`);
    const releases: (() => void)[] = [];
    for (const k of keys) {
      for (;;) {
        const cur = this.held.get(k);
        if (!cur) break;
        await cur;
      }
      let release!: () => void;
      const p = new Promise<void>((r) => (release = r));
      this.held.set(k, p);
      releases.push(() => {
        if (this.held.get(k) === p) this.held.delete(k);
        release();
      });
    }
    return () => {
      for (const r of releases) r();
    };
  }
}
