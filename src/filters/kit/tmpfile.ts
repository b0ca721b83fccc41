// Temporary files for filters that keep data of their own (cow's overlay,
// cache's blocks): created in $TMPDIR (default /var/tmp, as nbdkit: it is
// meant for large files and usually not a RAM disk), unlinked at once so
// nothing is left behind, even after a crash.
//
// Reads and writes are synchronous pread/pwrite. Such a file is almost
// always in the page cache, where a system call costs a few microseconds,
// while a round trip through libuv's thread pool (4 threads, shared with
// every other file request) costs tens: the file then behaves like memory
// that the kernel may write out to $TMPDIR instead of to swap. When the
// kernel has evicted the pages, a read waits for the disk and holds up the
// other connections meanwhile, as a memory overlay would wait for swap.
// Large requests (ASYNC_MIN and up) go through the thread pool instead: the
// copy then runs on another core while the event loop reads the next
// request, and the round trip is small next to the copy.

import { randomBytes } from "node:crypto";
import { readSync, writeSync } from "node:fs";
import { statfs } from "node:fs/promises";
import { open, unlink, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { punchHole, readFull, writeFull } from "../../plugins/file/io.js";

/** Where temporary files go: $TMPDIR, else /var/tmp. */
export function tmpDir(): string {
  const t = process.env.TMPDIR;
  return t !== undefined && t !== "" ? t : "/var/tmp";
}

/** Reads and writes of at least this many bytes use the thread pool. */
export const ASYNC_MIN = 128 * 1024;

export class TempFile {
  private closed = false;

  private constructor(
    private readonly fh: FileHandle,
    /** The file's name when it was created (already unlinked). */
    readonly path: string,
  ) {}

  /** Create and unlink a new file in tmpDir(); errors name the directory. */
  static async create(what: string): Promise<TempFile> {
    const dir = tmpDir();
    const path = join(dir, `nbdstate-${what}-${randomBytes(6).toString("hex")}`);
    let fh: FileHandle;
    try {
      fh = await open(path, "wx+", 0o600);
    } catch (e) {
      throw new Error(`${what}: cannot create a temporary file in ${dir} (set TMPDIR): ${(e as Error).message}`);
    }
    await unlink(path).catch(() => {});
    return new TempFile(fh, path);
  }

  /** The file system block size of tmpDir() (cache's minimum block size). */
  static async blockSize(): Promise<number> {
    try {
      return (await statfs(tmpDir())).bsize;
    } catch {
      return 4096;
    }
  }

  truncate(size: number): Promise<void> {
    return this.fh.truncate(size);
  }

  /** Read buf.length bytes at offset (zeros past the end of the file). */
  read(buf: Buffer, offset: number): void {
    const fd = this.fh.fd;
    let pos = 0;
    while (pos < buf.length) {
      const n = readSync(fd, buf, pos, buf.length - pos, offset + pos);
      if (n === 0) {
        buf.fill(0, pos);
        return;
      }
      pos += n;
    }
  }

  /** read() in the thread pool: for large reads, so the event loop goes on meanwhile. */
  readAsync(buf: Buffer, offset: number): Promise<void> {
    return readFull(this.fh, buf, offset);
  }

  /** write() in the thread pool (large writes: the copy runs on another core). */
  writeAsync(buf: Buffer, offset: number): Promise<void> {
    return writeFull(this.fh, buf, offset);
  }

  /** Write all of buf at offset. */
  write(buf: Buffer, offset: number): void {
    const fd = this.fh.fd;
    let pos = 0;
    while (pos < buf.length) {
      const n = writeSync(fd, buf, pos, buf.length - pos, offset + pos);
      if (n === 0) throw Object.assign(new Error("write to the temporary file returned 0 bytes"), { code: "EIO" });
      pos += n;
    }
  }

  /** Give back the space of [offset, offset + length) if the file system can; best effort. */
  async discard(offset: number, length: number): Promise<void> {
    await punchHole(this.fh.fd, offset, length).catch(() => false);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }
}
