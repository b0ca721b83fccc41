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
  constructor(readonly fd: number) {}

  /** open(2) a path with Node.js (O_CLOEXEC is added by Node). */
  static async open(path: string, flags: number): Promise<FdFile> {
    return new FdFile(await open(path, flags));
  }

  read(buf: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }> {
    return read(this.fd, buf, offset, length, position);
  }
  write(buf: Buffer, offset: number, length: number, position: number): Promise<{ bytesWritten: number }> {
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
