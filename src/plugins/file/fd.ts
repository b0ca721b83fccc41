// A file open as a bare descriptor (from openat/openat2 through koffi, or
// from fs.open), with the FileHandle methods the plugin uses. Node.js cannot
// wrap an fd it did not open into a FileHandle; its fs functions take fds.

import fs from "node:fs";
import { promisify } from "node:util";

const read = promisify(fs.read);
const write = promisify(fs.write);
const fstat = promisify(fs.fstat);
const fdatasync = promisify(fs.fdatasync);
const close = promisify(fs.close);
const open = promisify(fs.open);

export class FdFile {
  private closed = false;
  /**
   * Read and write on the calling thread, not Node's thread pool: set for
   * files in memory (tmpfs), where there is no device to wait for and the
   * pool's round trip (two thread switches per request) costs more than
   * the copy itself.
   */
  sync = false;
  constructor(readonly fd: number) {}

  /** open(2) a path with Node.js (O_CLOEXEC is added by Node). */
  static async open(path: string, flags: number): Promise<FdFile> {
    return new FdFile(await open(path, flags));
  }

  read(buf: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }> {
    if (this.sync) {
      try {
        return Promise.resolve({ bytesRead: fs.readSync(this.fd, buf, offset, length, position) });
      } catch (e) {
        return Promise.reject(e);
      }
    }
    return read(this.fd, buf, offset, length, position);
  }
  write(buf: Buffer, offset: number, length: number, position: number): Promise<{ bytesWritten: number }> {
    if (this.sync) {
      try {
        return Promise.resolve({ bytesWritten: fs.writeSync(this.fd, buf, offset, length, position) });
      } catch (e) {
        return Promise.reject(e);
      }
    }
    return write(this.fd, buf, offset, length, position);
  }
  stat(): Promise<fs.BigIntStats> {
    return fstat(this.fd, { bigint: true });
  }
  datasync(): Promise<void> {
    return fdatasync(this.fd);
  }
  /** Close once; later calls do nothing (the fd number may belong to another file by then). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await close(this.fd);
  }
}

/** statfs(2) f_type of file systems that live in memory: tmpfs (and shmem), ramfs. */
const MEMORY_FS = new Set([0x01021994, 0x858458f6]);

/** Whether path is on a file system in memory (false when it cannot be told). */
export async function inMemoryFs(path: string): Promise<boolean> {
  try {
    return MEMORY_FS.has((await fs.promises.statfs(path)).type);
  } catch {
    return false;
  }
}
