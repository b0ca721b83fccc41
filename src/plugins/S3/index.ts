// S3 plugin: a disk in an S3 bucket (nbdkit-S3-plugin's command line).
//
// key=NAME alone: one object, served read-only. size= with object-size=:
// the disk is cut into objects of object-size bytes named KEY/%016x (the
// block number in hex, as nbdkit's plugin names them); an object that does
// not exist reads as zeros, so a new disk costs nothing until written.
// Writes are stored (PutObject returned) before they are acknowledged;
// partial-object writes read, modify and write the object under a lock
// held per object by the whole server, so every connection sees every
// acknowledged write (multi-conn).

import { appendExtent } from "../../backend/extents.js";
import { parseSize } from "../../backend/size.js";
import {
  FLAG_FAST_ZERO, FLAG_REQ_ONE, NbdError, type BlockSize, type Extent, type FuaMode, type Plugin,
} from "../../backend/types.js";
import { NBD_EIO, NBD_ENOTSUP, NBD_STATE_HOLE, NBD_STATE_ZERO } from "../../protocol/constants.js";
import { readSecret } from "../kit/secret.js";
import { MISSING, ObjectStore } from "./store.js";

export interface S3Handle {
  /** Single-object mode: the object's size when the connection opened. */
  size: number;
}

/** Objects fetched or stored at once by one request spanning many. */
const PARALLEL = 16;

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Run fn over items, at most `limit` at a time; the first failure wins. */
async function eachLimited<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: unknown;
  const worker = async () => {
    while (failed === undefined && next < items.length) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (e) {
        failed ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failed !== undefined) throw failed;
}

/** One piece of a request: the part of object `index` from `start` (in the object) for `length` bytes. */
interface Piece {
  index: number;
  start: number;
  length: number;
  /** Offset of the piece within the request. */
  at: number;
}

export default function createPlugin(): Plugin<S3Handle> {
  let bucket: string | undefined;
  let key: string | undefined;
  let endpoint: string | undefined;
  let accessKey: string | undefined;
  let secretKey: string | undefined;
  let sessionToken: string | undefined;
  let diskSize: number | undefined;
  let objectSize: number | undefined;

  let store: ObjectStore | undefined;
  /** Per-object write locks, shared by every connection (see the header). */
  const locks = new Map<number, Promise<void>>();
  let zeros: Buffer | undefined;

  const blockMode = () => objectSize !== undefined;

  function s3(): ObjectStore {
    store ??= new ObjectStore({
      bucket: bucket!,
      endpoint,
      credentials: accessKey !== undefined ? { accessKeyId: accessKey, secretAccessKey: secretKey!, sessionToken } : undefined,
    });
    return store;
  }

  function objectKey(index: number): string {
    return `${key}/${index.toString(16).padStart(16, "0")}`;
  }

  function pieces(count: number, offset: number): Piece[] {
    const os = objectSize!;
    const out: Piece[] = [];
    for (let at = 0; at < count; ) {
      const pos = offset + at;
      const index = Math.floor(pos / os);
      const start = pos - index * os;
      const length = Math.min(os - start, count - at);
      out.push({ index, start, length, at });
      at += length;
    }
    return out;
  }

  /** Serialise writers of one object (reads need no lock: a PUT replaces an object whole). */
  async function locked<T>(index: number, fn: () => Promise<T>): Promise<T> {
    const prev = locks.get(index) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = prev.then(() => mine);
    locks.set(index, tail);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (locks.get(index) === tail) locks.delete(index);
    }
  }

  /** A failure as the client sees it (EIO) and the log shows it (one line). */
  function fail(e: unknown): NbdError {
    if (e instanceof NbdError) return e;
    // The server logs the failed request (one line, with the connection).
    return new NbdError(NBD_EIO, `S3: ${message(e)}`);
  }

  /** Read a whole object into a fresh buffer (zeros if it is missing), checking its size. */
  async function wholeObject(index: number): Promise<Buffer> {
    const buf = Buffer.alloc(objectSize!);
    const total = await s3().read(objectKey(index), 0, objectSize!, buf, 0);
    if (total !== MISSING && total !== objectSize) {
      throw new Error(`object ${s3().where(objectKey(index))} has ${total} bytes, expected object-size ${objectSize}`);
    }
    return buf;
  }

  function isZero(b: Buffer): boolean {
    zeros ??= Buffer.alloc(objectSize!);
    return b.equals(zeros.subarray(0, b.length));
  }

  /** Store the bytes of piece p (taken from src at p.at), read-modify-write if it is partial. */
  async function writePiece(p: Piece, src: Buffer | null): Promise<void> {
    const name = objectKey(p.index);
    await locked(p.index, async () => {
      if (p.length === objectSize) {
        if (src) await s3().put(name, src.subarray(p.at, p.at + p.length));
        else await s3().delete(name);
        return;
      }
      const obj = await wholeObject(p.index);
      if (src) src.copy(obj, p.start, p.at, p.at + p.length);
      else obj.fill(0, p.start, p.start + p.length);
      // A block that became all zeros by zeroing is deleted: it reads the same.
      if (!src && isZero(obj)) await s3().delete(name);
      else await s3().put(name, obj);
    });
  }

  return {
    name: "S3",
    version: "1.0.0",
    longname: "nbdstate S3 plugin",
    description: "A disk stored in an S3 bucket: one object (read-only), or many objects of object-size bytes (writable).",
    configHelp:
      "bucket=<BUCKET>            (required) The bucket.\n" +
      "key=<KEY>                  (required) The object, or with size= the prefix of the objects.\n" +
      "size=<SIZE>                Store a writable disk of SIZE bytes as many objects ...\n" +
      "object-size=<SIZE>         ... of this size each (both or neither).\n" +
      "endpoint-url=<URL>         An S3-compatible server (Ceph, MinIO, ...).\n" +
      "access-key=<KEY>|+FILE|-|-FD     Credentials (default: the AWS SDK's chain:\n" +
      "secret-key=<KEY>|+FILE|-|-FD     environment, ~/.aws/credentials, AWS_PROFILE,\n" +
      "session-token=<TOK>|+FILE|-|-FD  instance metadata ...).",

    config(k, value) {
      const once = <T>(cur: T | undefined, v: T): T => {
        if (cur !== undefined) throw new Error(`S3: ${k} given more than once`);
        return v;
      };
      const sz = (): number => {
        try {
          return parseSize(value);
        } catch (e) {
          throw new Error(`S3: ${k}: ${message(e)}`);
        }
      };
      switch (k) {
        case "bucket":
          bucket = once(bucket, value);
          return;
        case "key":
          key = once(key, value);
          return;
        case "endpoint-url":
          try {
            const u = new URL(value);
            if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error();
          } catch {
            throw new Error(`S3: endpoint-url: not an http(s) URL: '${value}'`);
          }
          endpoint = once(endpoint, value);
          return;
        case "access-key":
          accessKey = once(accessKey, readSecret("S3: access-key", value));
          return;
        case "secret-key":
          secretKey = once(secretKey, readSecret("S3: secret-key", value));
          return;
        case "session-token":
          sessionToken = once(sessionToken, readSecret("S3: session-token", value));
          return;
        case "size":
          diskSize = once(diskSize, sz());
          return;
        case "object-size":
          objectSize = once(objectSize, sz());
          return;
        default:
          throw new Error(`S3: unknown parameter '${k}'`);
      }
    },

    configComplete() {
      if (bucket === undefined || bucket === "") throw new Error("S3: the bucket parameter is required");
      if (key === undefined || key === "") throw new Error("S3: the key parameter is required");
      if ((diskSize === undefined) !== (objectSize === undefined)) throw new Error("S3: size= and object-size= must be given together");
      if ((accessKey === undefined) !== (secretKey === undefined)) throw new Error("S3: access-key= and secret-key= must be given together");
      if (sessionToken !== undefined && accessKey === undefined) throw new Error("S3: session-token= needs access-key= and secret-key=");
      if (objectSize !== undefined) {
        if (objectSize < 512 || objectSize > 64 * 1024 * 1024) throw new Error(`S3: object-size must be from 512 bytes to 64M, not ${objectSize}`);
        if (diskSize! % objectSize !== 0) throw new Error(`S3: size (${diskSize}) must be a multiple of object-size (${objectSize})`);
      }
    },

    unload() {
      store?.destroy();
      store = undefined;
    },

    async open() {
      try {
        if (!blockMode()) {
          const size = await s3().size(key!);
          if (size === MISSING) throw new Error(`${s3().where(key!)}: no such object`);
          return { size };
        }
        await s3().checkBucket();
        return { size: diskSize! };
      } catch (e) {
        throw new Error(`S3: ${message(e)}`);
      }
    },

    getSize(h) {
      return h.size;
    },
    canWrite() {
      return blockMode();
    },
    canFlush() {
      return blockMode();
    },
    // Every write is stored before it is acknowledged.
    canFua(): FuaMode {
      return blockMode() ? "native" : "none";
    },
    canTrim() {
      return blockMode();
    },
    canZero() {
      return blockMode();
    },
    canFastZero() {
      return blockMode();
    },
    canExtents() {
      return blockMode();
    },
    canMultiConn() {
      return true;
    },
    isRotational() {
      return false;
    },
    blockSize(): BlockSize | null {
      if (!blockMode()) return null;
      const os = objectSize!;
      // Writes of whole objects need no read-modify-write: say so.
      const pow2 = (os & (os - 1)) === 0 && os <= 32 * 1024 * 1024;
      return { minimum: 1, preferred: pow2 ? os : 4096, maximum: 64 * 1024 * 1024 };
    },

    async pread(h, buf, offset) {
      try {
        if (!blockMode()) {
          if (buf.length === 0) return;
          const total = await s3().read(key!, offset, buf.length, buf, 0);
          if (total === MISSING) throw new Error(`${s3().where(key!)}: the object is gone`);
          if (total < offset + buf.length) throw new Error(`${s3().where(key!)}: the object shrank to ${total} bytes`);
          return;
        }
        await eachLimited(pieces(buf.length, offset), PARALLEL, async (p) => {
          const total = await s3().read(objectKey(p.index), p.start, p.length, buf, p.at);
          if (total === MISSING) buf.fill(0, p.at, p.at + p.length);
          else if (total !== objectSize) {
            throw new Error(`object ${s3().where(objectKey(p.index))} has ${total} bytes, expected object-size ${objectSize}`);
          }
        });
      } catch (e) {
        throw fail(e);
      }
    },

    async pwrite(_h, buf, offset) {
      try {
        await eachLimited(pieces(buf.length, offset), PARALLEL, (p) => writePiece(p, buf));
      } catch (e) {
        throw fail(e);
      }
    },

    // Every acknowledged write is already stored (PutObject returned, and S3
    // reads after writes are strongly consistent): nothing is left to flush.
    flush() {},

    async trim(_h, count, offset) {
      try {
        // Only whole objects are deleted; a partial one is left as it is (trim is advisory).
        const whole = pieces(count, offset).filter((p) => p.length === objectSize);
        await eachLimited(whole, PARALLEL, (p) => writePiece(p, null));
      } catch (e) {
        throw fail(e);
      }
    },

    async zero(_h, count, offset, flags) {
      const ps = pieces(count, offset);
      // Zeroing part of an object reads and rewrites it: not fast.
      if (flags & FLAG_FAST_ZERO && ps.some((p) => p.length !== objectSize)) {
        throw new NbdError(NBD_ENOTSUP, "S3: fast zero of part of an object is not possible");
      }
      try {
        await eachLimited(ps, PARALLEL, (p) => writePiece(p, null));
      } catch (e) {
        throw fail(e);
      }
    },

    async extents(_h, count, offset, flags): Promise<Extent[]> {
      try {
        const os = objectSize!;
        const first = Math.floor(offset / os);
        const last = Math.floor((offset + count - 1) / os);
        const lastNeeded = flags & FLAG_REQ_ONE ? first : last;
        const present = new Set<number>();
        const prefix = `${key}/`;
        const found = await s3().list(prefix, first > 0 ? objectKey(first - 1) : undefined, objectKey(lastNeeded));
        for (const o of found) {
          const hex = o.key.slice(prefix.length);
          if (/^[0-9a-f]{16}$/.test(hex)) present.add(parseInt(hex, 16));
        }
        const out: Extent[] = [];
        for (let i = first; i <= lastNeeded; i++) {
          const start = i === first ? offset : i * os;
          const end = Math.min((i + 1) * os, offset + count);
          const type = present.has(i) ? 0 : NBD_STATE_HOLE | NBD_STATE_ZERO;
          appendExtent(out, end - start, type);
        }
        return out;
      } catch (e) {
        throw fail(e);
      }
    },
  };
}
