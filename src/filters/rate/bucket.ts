// A token bucket (in bits) for the rate filter: it starts full and holds
// `burstiness` seconds' worth of tokens. A request takes its tokens at
// once, running the bucket into debt if need be, and waits until the
// debt is paid: so a request larger than the bucket waits exactly
// size / rate, and requests queued behind it wait their turn.
//
// (nbdkit caps the refill during such a wait at the bucket's capacity,
// so a request several buckets large sleeps far longer than size / rate.)

export class Bucket {
  private level: number;
  private capacity: number;
  private last = performance.now();

  constructor(
    /** Bits per second; 0 = no limit. */
    public rate: number,
    private readonly capacitySecs: number,
  ) {
    this.capacity = rate * capacitySecs;
    this.level = this.capacity;
  }

  /** Change the rate (the rate files); a full bucket stays within the new capacity. */
  adjust(rate: number): void {
    this.refill();
    this.rate = rate;
    this.capacity = rate * this.capacitySecs;
    if (this.level > this.capacity) this.level = this.capacity;
  }

  private refill(): void {
    const now = performance.now();
    if (this.rate > 0) this.level = Math.min(this.capacity, this.level + (this.rate * Math.max(0, now - this.last)) / 1000);
    this.last = now;
  }

  /** Take `bits` tokens; returns the ms to wait before going ahead (0 = at once). */
  take(bits: number): number {
    if (this.rate === 0) return 0;
    this.refill();
    this.level -= bits;
    return this.level >= 0 ? 0 : (-this.level * 1000) / this.rate;
  }
}
