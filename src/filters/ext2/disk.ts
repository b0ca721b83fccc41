// The Disk (npm file-disk) that libext2fs reads and writes: a context of
// the layer below, with a small cache. libext2fs reads one filesystem block
// (1-4 KiB) at a time, so reads are served from aligned 64 KiB chunks kept
// in an LRU of CACHE_CHUNKS entries; writes go straight through to the
// layer below and update the cached chunks they touch.
//
// A read-only disk keeps what libext2fs writes (it writes even when only
// reading, e.g. at unmount) in memory instead: the layer below is never
// written.

import { Disk, type ReadResult, type WriteResult } from "file-disk";
import type { Context } from "../../backend/types.js";

export const CHUNK = 64 * 1024;
export const CACHE_CHUNKS = 128;

export class ContextDisk extends Disk {
  private cache = new Map<number, Buffer>();
  /** Bumped by every write, so a chunk read before it is not cached after it. */
  private epoch = 0;
  private loading = new Map<number, Promise<Buffer>>();
  /** Reads and writes that reached the layer below (for tests and the status page). */
  readonly stats = { reads: 0, writes: 0, flushes: 0 };

  constructor(
    private readonly ctx: Context,
    private readonly size: number,
    readonly: boolean,
    private readonly canFlush: boolean,
  ) {
    // readOnly: never call _write/_flush; recordWrites: keep writes in memory.
    super(readonly, readonly, false, false);
  }

  protected async _getCapacity(): Promise<number> {
    return this.size;
  }

  private bounds(pos: number, len: number, what: string): void {
    if (pos < 0 || len < 0 || pos + len > this.size) {
      throw new Error(`ext2: ${what} of ${len} bytes at ${pos} beyond the end of the export below (${this.size} bytes)`);
    }
  }

  private chunk(i: number): Promise<Buffer> {
    const hit = this.cache.get(i);
    if (hit) {
      this.cache.delete(i); // most recently used goes last
      this.cache.set(i, hit);
      return Promise.resolve(hit);
    }
    let p = this.loading.get(i);
    if (!p) {
      const epoch = this.epoch;
      const start = i * CHUNK;
      const b = Buffer.alloc(Math.min(CHUNK, this.size - start));
      this.stats.reads++;
      p = this.ctx.pread(b, start, 0).then(() => {
        if (this.epoch === epoch) {
          this.cache.set(i, b);
          if (this.cache.size > CACHE_CHUNKS) this.cache.delete(this.cache.keys().next().value!);
        }
        return b;
      });
      const mine = p;
      this.loading.set(i, mine);
      mine.finally(() => this.loading.get(i) === mine && this.loading.delete(i)).catch(() => {});
    }
    return p;
  }

  protected async _read(buf: Buffer, bufOff: number, len: number, pos: number): Promise<ReadResult> {
    this.bounds(pos, len, "read");
    let done = 0;
    while (done < len) {
      const at = pos + done;
      const i = Math.floor(at / CHUNK);
      const c = await this.chunk(i);
      const from = at - i * CHUNK;
      const n = Math.min(len - done, c.length - from);
      c.copy(buf, bufOff + done, from, from + n);
      done += n;
    }
    return { bytesRead: len, buffer: buf };
  }

  protected async _write(buf: Buffer, bufOff: number, len: number, pos: number): Promise<WriteResult> {
    this.bounds(pos, len, "write");
    const data = buf.subarray(bufOff, bufOff + len);
    this.epoch++;
    this.loading.clear(); // later readers must not join a load that started before this write
    this.stats.writes++;
    await this.ctx.pwrite(data, pos, 0);
    for (let i = Math.floor(pos / CHUNK); i * CHUNK < pos + len; i++) {
      const c = this.cache.get(i);
      if (!c) continue;
      const s = Math.max(pos, i * CHUNK);
      const e = Math.min(pos + len, i * CHUNK + c.length);
      data.copy(c, s - i * CHUNK, s - pos, e - pos);
    }
    return { bytesWritten: len, buffer: buf };
  }

  protected async _flush(): Promise<void> {
    this.stats.flushes++;
    if (this.canFlush) await this.ctx.flush(0);
  }
}
