// The layout of a sparse-random disk: which 4 KiB blocks hold data. As in
// nbdkit, the disk alternates runs of hole blocks and runs of data blocks,
// leaving a run with probability P per block: P(data->hole) = 1/runlength
// (in blocks) and P(hole->data) chosen so that `percent` of the disk is
// data. Instead of flipping a coin per block (nbdkit keeps a bitmap), each
// run's length is drawn from the geometric distribution directly, so the
// map costs one entry per run and is built in time proportional to the
// number of runs, not to the size of the disk.

import { randomUnit, streamKey } from "../kit/hash-random.js";

export const BLOCK = 4096;
const RUN_STREAM = 0x52554e53; // "RUNS"
/** A layout with more data runs than this is refused (memory: 16 bytes a run). */
export const MAX_RUNS = 16 << 20;

export interface RunPiece {
  offset: number;
  length: number;
  data: boolean;
}

export class RunMap {
  private starts: Float64Array;
  private ends: Float64Array;
  /** Number of data runs. */
  count = 0;

  private constructor(readonly size: number) {
    this.starts = new Float64Array(16);
    this.ends = new Float64Array(16);
  }

  static generate(size: number, seed: number, percent: number, runlength: number): RunMap {
    const m = new RunMap(size);
    const blocks = Math.ceil(size / BLOCK);
    if (blocks === 0 || percent <= 0) return m;
    if (percent >= 100) {
      m.push(0, blocks);
      return m;
    }
    const pDataHole = Math.min(1, BLOCK / runlength);
    const f = percent / 100;
    const pHoleData = Math.min(1, (f * pDataHole) / (1 - f));
    const key = streamKey(seed, RUN_STREAM);
    let draw = 0;
    // Number of blocks until leaving the state: >= 1, geometric with p.
    const runLength = (p: number): number => {
      if (p >= 1) return 1;
      const n = Math.ceil(Math.log(randomUnit(key, draw++)) / Math.log1p(-p));
      return n >= 1 ? n : 1;
    };
    let pos = 0;
    let data = false; // the first block is a hole, as nbdkit's
    while (pos < blocks) {
      const next = Math.min(blocks, pos + runLength(data ? pDataHole : pHoleData));
      if (data) m.push(pos, next);
      pos = next;
      data = !data;
    }
    return m;
  }

  private push(start: number, end: number): void {
    if (this.count === MAX_RUNS) {
      throw new Error(`sparse-random: the layout has more than ${MAX_RUNS} data runs (use a larger runlength)`);
    }
    if (this.count === this.starts.length) {
      const grow = (a: Float64Array) => {
        const b = new Float64Array(a.length * 2);
        b.set(a);
        return b;
      };
      this.starts = grow(this.starts);
      this.ends = grow(this.ends);
    }
    this.starts[this.count] = start;
    this.ends[this.count] = end;
    this.count++;
  }

  /** Index of the first data run that ends after `block`. */
  private find(block: number): number {
    let lo = 0;
    let hi = this.count;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.ends[mid]! <= block) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** [offset, offset + count) as alternating hole and data pieces, in order. */
  pieces(offset: number, count: number): RunPiece[] {
    const out: RunPiece[] = [];
    const end = offset + count;
    let pos = offset;
    let i = this.find(Math.floor(offset / BLOCK));
    while (pos < end) {
      const runStart = i < this.count ? this.starts[i]! * BLOCK : Infinity;
      const runEnd = i < this.count ? Math.min(this.ends[i]! * BLOCK, this.size) : Infinity;
      if (pos < runStart) {
        const n = Math.min(end, runStart) - pos;
        out.push({ offset: pos, length: n, data: false });
        pos += n;
      } else {
        const n = Math.min(end, runEnd) - pos;
        out.push({ offset: pos, length: n, data: true });
        pos += n;
        i++;
      }
    }
    return out;
  }

  /** Data blocks, data runs and the mean run length in bytes (for the debug log). */
  stats(): { dataBytes: number; runs: number; meanRun: number } {
    let blocks = 0;
    for (let i = 0; i < this.count; i++) blocks += this.ends[i]! - this.starts[i]!;
    const dataBytes = Math.min(blocks * BLOCK, this.size);
    return { dataBytes, runs: this.count, meanRun: this.count ? (blocks * BLOCK) / this.count : 0 };
  }
}
