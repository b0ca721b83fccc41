// A hidden temporary file holding decompressed data (as nbdkit's gzip
// filter): created in $TMPDIR (default /var/tmp, as nbdkit, since /tmp is
// often a small tmpfs) and unlinked at once, so it vanishes when closed or
// when the server dies.

import { randomBytes } from "node:crypto";
import { open, unlink, type FileHandle } from "node:fs/promises";
import { join } from "node:path";

export function tempDir(): string {
  return process.env.TMPDIR || "/var/tmp";
}

export class TempFile {
  private constructor(
    private readonly fh: FileHandle,
    public size: number,
  ) {}

  static async create(prefix: string): Promise<TempFile> {
    const path = join(tempDir(), `${prefix}-${randomBytes(8).toString("hex")}`);
    const fh = await open(path, "wx+", 0o600);
    await unlink(path).catch(() => {});
    return new TempFile(fh, 0);
  }

  /** Append bytes at the end. */
  async append(data: Uint8Array): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.fh.write(data, done, data.length - done, this.size + done);
      done += bytesWritten;
    }
    this.size += data.length;
  }

  /** Fill buf from `offset` (within size). */
  async read(buf: Buffer, offset: number): Promise<void> {
    let done = 0;
    while (done < buf.length) {
      const { bytesRead } = await this.fh.read(buf, done, buf.length - done, offset + done);
      if (bytesRead === 0) throw new Error(`temporary file: short read at ${offset + done}`);
      done += bytesRead;
    }
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}
