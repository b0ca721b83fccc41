// Unlocking a LUKS1 master key: for each active key slot, PBKDF2 of the
// passphrase gives the key that decrypts the slot's key material; the
// anti-forensic merge (AF_merge with the header's hash) of its stripes is a
// candidate master key, right when its PBKDF2 digest equals the header's.

import { createHash, pbkdf2, timingSafeEqual } from "node:crypto";
import { promisify } from "node:util";
import type { Context } from "../../backend/types.js";
import { sectorCipher, hashName } from "./cipher.js";
import { LuksError, SECTOR, type LuksHeader } from "./header.js";

const pbkdf2Async = promisify(pbkdf2);

/** The diffusion of AF_split/AF_merge: hash each digest-sized piece with its index. */
function diffuse(block: Buffer, hash: string): Buffer {
  const out = Buffer.alloc(block.length);
  const ds = createHash(hash).digest().length;
  for (let i = 0, at = 0; at < block.length; i++, at += ds) {
    const piece = block.subarray(at, Math.min(at + ds, block.length));
    const iv = Buffer.alloc(4);
    iv.writeUInt32BE(i);
    createHash(hash).update(iv).update(piece).digest().copy(out, at, 0, piece.length);
  }
  return out;
}

/** AF_merge: the key hidden in `stripes` stripes of `keyBytes` bytes. */
export function afMerge(material: Buffer, keyBytes: number, stripes: number, hash: string): Buffer {
  let d: Buffer = Buffer.alloc(keyBytes);
  for (let i = 0; i < stripes - 1; i++) {
    const s = material.subarray(i * keyBytes, (i + 1) * keyBytes);
    for (let k = 0; k < keyBytes; k++) d[k]! ^= s[k]!;
    d = diffuse(d, hash);
  }
  const last = material.subarray((stripes - 1) * keyBytes, stripes * keyBytes);
  for (let k = 0; k < keyBytes; k++) d[k]! ^= last[k]!;
  return d;
}

/** The master key, or a LuksError if no key slot opens with `passphrase`. */
export async function unlock(h: LuksHeader, passphrase: Buffer, disk: Context): Promise<{ key: Buffer; slot: number }> {
  const hash = hashName(h.hashSpec);
  sectorCipher(h.cipherName, h.cipherMode, Buffer.alloc(h.keyBytes)); // an unsupported cipher fails before any PBKDF2
  if (h.slots.length === 0) throw new LuksError("no active key slot");
  for (const slot of h.slots) {
    const slotKey = await pbkdf2Async(passphrase, slot.salt, slot.iterations, h.keyBytes, hash);
    const len = Math.ceil((h.keyBytes * slot.stripes) / SECTOR) * SECTOR;
    const material = Buffer.alloc(len);
    await disk.pread(material, slot.offset * SECTOR, 0);
    sectorCipher(h.cipherName, h.cipherMode, slotKey).decrypt(material, 0);
    const key = afMerge(material, h.keyBytes, slot.stripes, hash);
    const digest = await pbkdf2Async(key, h.mkDigestSalt, h.mkDigestIter, 20, hash);
    if (timingSafeEqual(digest, h.mkDigest)) return { key, slot: slot.index };
  }
  throw new LuksError("the passphrase does not open any key slot (wrong passphrase?)");
}
