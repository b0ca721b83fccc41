// luks filter: open a LUKSv1-encrypted disk (the layer below) and serve
// the decrypted payload, reading and writing, as nbdkit's luks filter.
// Key slots are unlocked with PBKDF2 and the anti-forensic merge
// (./keys.ts); sectors are encrypted and decrypted with node:crypto
// (./cipher.ts). The master key is derived once per header (by the first
// client) and reused by later clients while the header is unchanged.

import { createHash } from "node:crypto";
import { FLAG_FAST_ZERO, FLAG_FUA, NbdError, type Context, type Extent, type Filter } from "../../backend/types.js";
import { NBD_EINVAL, NBD_ENOTSUP } from "../../protocol/constants.js";
import { sectorCipher, type SectorCipher } from "./cipher.js";
import { HEADER_SIZE, LuksError, parseHeader, SECTOR } from "./header.js";
import { unlock } from "./keys.js";
import { readFile, readPassphrase } from "./passphrase.js";
import { SectorLocks } from "./locks.js";

interface LuksHandle {
  exportName: string;
  /** Byte offset of the payload in the disk below. */
  payload: number;
  size: number;
  cipher: SectorCipher | null;
}

/** Bytes encrypted or decrypted per step of a large request. */
const STEP = 1 << 20;

export default function createFilter(): Filter<LuksHandle> {
  let passphraseValue: string | undefined;
  let passphrase: Buffer | null = null;
  /** Unlocked master keys by header digest: PBKDF2 runs once per header. */
  const keys = new Map<string, Promise<{ key: Buffer; slot: number }>>();
  const locks = new SectorLocks();

  /** Read and decrypt whole sectors [first, first + buf.length / 512). */
  async function readSectors(next: Context, h: LuksHandle, buf: Buffer, first: number): Promise<void> {
    await next.pread(buf, h.payload + first * SECTOR, 0);
    for (let at = 0; at < buf.length; at += STEP) h.cipher!.decrypt(buf.subarray(at, at + STEP), first + at / SECTOR);
  }

  /** Encrypt (a copy of) whole sectors and write them. */
  async function writeSectors(next: Context, h: LuksHandle, plain: Buffer, first: number, flags: number): Promise<void> {
    for (let at = 0; at < plain.length; at += STEP) {
      const piece = Buffer.from(plain.subarray(at, at + STEP));
      h.cipher!.encrypt(piece, first + at / SECTOR);
      await next.pwrite(piece, h.payload + first * SECTOR + at, flags);
    }
  }

  async function write(next: Context, h: LuksHandle, data: Buffer, off: number, flags: number): Promise<void> {
    const first = Math.floor(off / SECTOR);
    const end = Math.ceil((off + data.length) / SECTOR);
    if (off % SECTOR === 0 && data.length % SECTOR === 0) return writeSectors(next, h, data, first, flags);
    // Partial sectors: read-modify-write, with the partial sectors locked so
    // that two writes to different bytes of one sector both land.
    const partial = [first];
    if (end - 1 !== first) partial.push(end - 1);
    const release = await locks.acquire(h.exportName, partial);
    try {
      const span = Buffer.alloc((end - first) * SECTOR);
      if (off % SECTOR !== 0) await readSectors(next, h, span.subarray(0, SECTOR), first);
      if ((off + data.length) % SECTOR !== 0 && (end - 1 !== first || off % SECTOR === 0)) {
        await readSectors(next, h, span.subarray(span.length - SECTOR), end - 1);
      }
      data.copy(span, off - first * SECTOR);
      await writeSectors(next, h, span, first, flags);
    } finally {
      release();
    }
  }

  return {
    name: "luks",
    version: "1.0.0",
    longname: "nbdstate luks filter",
    description: "Read and write LUKSv1-encrypted disks.",
    configHelp:
      "passphrase=<SECRET>      Secret passphrase (or +FILE, -FD, - to type it).\n" +
      "passphrase-file=<FILE>   Read the passphrase from FILE (same as passphrase=+FILE).",

    async config(next, key, value) {
      if (key === "passphrase") {
        passphraseValue = value;
        passphrase = await readPassphrase(value, "luks: passphrase");
        return;
      }
      if (key === "passphrase-file") {
        passphraseValue = `+${value}`;
        passphrase = readFile(value, "luks: passphrase-file");
        return;
      }
      return next(key, value);
    },

    configComplete(next) {
      if (passphrase === null || passphraseValue === undefined) throw new Error("luks: passphrase parameter is required");
      return next();
    },

    open(a) {
      return { exportName: a.exportName, payload: 0, size: 0, cipher: null };
    },

    async prepare(next, h) {
      const disk = await next.getSize();
      if (disk < HEADER_SIZE) throw new NbdError(NBD_EINVAL, "luks: this disk does not contain a LUKS header (too small)");
      const raw = Buffer.alloc(HEADER_SIZE);
      await next.pread(raw, 0, 0);
      try {
        const hdr = parseHeader(raw, disk);
        const digest = createHash("sha256").update(raw).digest("hex");
        let p = keys.get(digest);
        if (!p) {
          p = unlock(hdr, passphrase!, next);
          keys.set(digest, p);
          // Only a key that matches the header's digest is kept (it is right for
          // that header whatever the key material); a failure is tried again
          // next time, since damaged key material may have been repaired.
          p.catch(() => keys.delete(digest));
        }
        const { key } = await p;
        h.cipher = sectorCipher(hdr.cipherName, hdr.cipherMode, key);
        h.payload = hdr.payloadOffset * SECTOR;
        h.size = disk - h.payload;
      } catch (e) {
        if (e instanceof LuksError) throw new NbdError(NBD_EINVAL, e.message);
        throw e;
      }
    },

    getSize(_next, h) {
      return h.size;
    },
    canTrim() {
      // Trimming ciphertext would make the plaintext read back as garbage.
      return false;
    },
    canFastZero() {
      return false;
    },
    canExtents() {
      return true;
    },
    blockSize() {
      return { minimum: SECTOR, preferred: SECTOR, maximum: 0xffffffff };
    },

    async pread(next, h, buf, off) {
      const first = Math.floor(off / SECTOR);
      const end = Math.ceil((off + buf.length) / SECTOR);
      if (off % SECTOR === 0 && buf.length % SECTOR === 0) return readSectors(next, h, buf, first);
      const span = Buffer.allocUnsafe((end - first) * SECTOR);
      await readSectors(next, h, span, first);
      span.copy(buf, 0, off - first * SECTOR, off - first * SECTOR + buf.length);
    },

    pwrite(next, h, buf, off, flags) {
      return write(next, h, buf, off, flags);
    },

    async zero(next, h, count, off, flags) {
      // Encrypted zeros are not zeros below: write them.
      if (flags & FLAG_FAST_ZERO) throw new NbdError(NBD_ENOTSUP, "luks: zeroing is not fast (it writes encrypted zeros)");
      const z = Buffer.alloc(Math.min(count, STEP));
      for (let done = 0; done < count; ) {
        const n = Math.min(z.length, count - done);
        // Only FUA carries over to a write (MAY_TRIM is a zero request's flag).
        await write(next, h, z.subarray(0, n), off + done, flags & FLAG_FUA);
        done += n;
      }
    },

    extents(_next, h, count, off): Extent[] {
      // Holes below are not zeros once decrypted: everything is data.
      return [{ length: Math.min(count, h.size - off), type: 0 }];
    },

    cache(next, h, count, off, flags) {
      return next.cache(count, h.payload + off, flags);
    },
  };
}
