// Low-level helpers for the file plugin: full positional reads and writes,
// hole punching through fs-native-extensions, block device size.

import { createRequire } from "node:module";
import { readFile } from "node:fs/promises";

/** What these helpers need of a file: a FileHandle, or an FdFile. */
export interface PositionalFile {
  read(buf: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
  write(buf: Buffer, offset: number, length: number, position: number): Promise<{ bytesWritten: number }>;
}

/** The part of fs-native-extensions we use (it ships no type declarations). */
interface NativeExtensions {
  trim(fd: number, offset: number, length: number): Promise<void>;
}

let native: NativeExtensions | null | undefined;

/** fs-native-extensions, or null if it cannot be loaded on this platform. */
export function nativeExtensions(): NativeExtensions | null {
  if (native === undefined) {
    try {
      const require = createRequire(import.meta.url);
      native = require("fs-native-extensions") as NativeExtensions;
    } catch {
      native = null;
    }
  }
  return native;
}

/** Errors meaning "this file system or device cannot punch holes". */
const UNSUPPORTED = new Set(["EOPNOTSUPP", "ENOTSUP", "ENOSYS", "ENOTTY", "EINVAL", "ENODEV"]);

/**
 * Punch a hole over [offset, offset + length) (reads back as zeros, size
 * kept). Returns false if hole punching is not supported here; other errors
 * (EIO, EBADF...) are thrown.
 */
export async function punchHole(fd: number, offset: number, length: number): Promise<boolean> {
  const nx = nativeExtensions();
  if (nx === null) return false;
  if (length === 0) return true;
  try {
    await nx.trim(fd, offset, length);
    return true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== undefined && UNSUPPORTED.has(code)) return false;
    throw e;
  }
}

/** Read buf.length bytes at offset, looping on short reads; zero-fill past EOF. */
export async function readFull(fh: PositionalFile, buf: Buffer, offset: number): Promise<void> {
  const len = buf.length;
  let pos = 0;
  while (pos < len) {
    const { bytesRead } = await fh.read(buf, pos, len - pos, offset + pos);
    if (bytesRead === 0) {
      buf.fill(0, pos);
      return;
    }
    pos += bytesRead;
  }
}

/** Write all of buf at offset, looping on short writes. */
export async function writeFull(fh: PositionalFile, buf: Buffer, offset: number): Promise<void> {
  const len = buf.length;
  let pos = 0;
  while (pos < len) {
    const { bytesWritten } = await fh.write(buf, pos, len - pos, offset + pos);
    if (bytesWritten === 0) throw Object.assign(new Error("write returned 0 bytes"), { code: "EIO" });
    pos += bytesWritten;
  }
}

const CHUNK = 1 << 20;
let zeroChunk: Buffer | undefined;
let sinkChunk: Buffer | undefined;

/** Write count zero bytes at offset, in chunks of at most 1 MiB. */
export async function writeZeros(fh: PositionalFile, count: number, offset: number): Promise<void> {
  zeroChunk ??= Buffer.alloc(CHUNK);
  let done = 0;
  while (done < count) {
    const n = Math.min(CHUNK, count - done);
    await writeFull(fh, n === CHUNK ? zeroChunk : zeroChunk.subarray(0, n), offset + done);
    done += n;
  }
}

/** Read [offset, offset + count) into a discarded buffer (warms the page cache). */
export async function readAhead(fh: PositionalFile, count: number, offset: number): Promise<void> {
  sinkChunk ??= Buffer.allocUnsafe(CHUNK);
  let done = 0;
  while (done < count) {
    const n = Math.min(CHUNK, count - done);
    const { bytesRead } = await fh.read(sinkChunk, 0, n, offset + done);
    if (bytesRead === 0) return;
    done += bytesRead;
  }
}

/** Split a Linux dev_t (as bigint) into "major:minor". */
export function devName(dev: bigint): string {
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

/** Size in bytes of the block device with the given rdev, from sysfs. */
export async function blockDeviceSize(rdev: bigint): Promise<number> {
  const p = `/sys/dev/block/${devName(rdev)}/size`;
  let text: string;
  try {
    text = await readFile(p, "utf8");
  } catch (e) {
    throw new Error(`cannot determine block device size (${p}: ${(e as Error).message})`);
  }
  const sectors = Number(text.trim());
  if (!Number.isSafeInteger(sectors)) throw new Error(`cannot parse block device size from ${p}`);
  return sectors * 512;
}
