// Sector encryption as dm-crypt does it for LUKS1: 512-byte sectors, each
// with its own IV from its sector number (relative to the start of the
// payload, or of the key material). Ciphers: aes in xts, cbc or ecb mode;
// IV generators plain, plain64, essiv:HASH and null. All of it node:crypto.

import { createCipheriv, createDecipheriv, createHash, getHashes } from "node:crypto";
import { LuksError, SECTOR } from "./header.js";

export interface SectorCipher {
  /** Transform whole sectors in place; `sector` is the number of buf's first sector. */
  decrypt(buf: Buffer, sector: number): void;
  encrypt(buf: Buffer, sector: number): void;
  readonly description: string;
}

export function hashName(spec: string): string {
  const h = spec.toLowerCase();
  if (!getHashes().includes(h)) throw new LuksError(`unsupported hash '${spec.slice(0, 32)}'`);
  return h;
}

function ivPlain64(buf: Buffer, i: number, sector: number): void {
  buf.fill(0, i * 16, i * 16 + 16);
  buf.writeBigUInt64LE(BigInt(sector), i * 16);
}

/** The sector cipher for a header's cipher-name and cipher-mode with `key`. */
export function sectorCipher(name: string, mode: string, key: Buffer): SectorCipher {
  if (name.toLowerCase() !== "aes") throw new LuksError(`unsupported cipher '${name.slice(0, 32)}' (only aes)`);
  const m = /^(xts|cbc|ecb)(?:-(plain64|plain|null|essiv:([a-z0-9-]+)))?$/.exec(mode.toLowerCase());
  if (!m || (m[1] !== "ecb" && !m[2])) throw new LuksError(`unsupported cipher mode '${mode.slice(0, 32)}'`);
  const chain = m[1]!;
  const ivgen = m[2] ?? "null";
  const bits = chain === "xts" ? (key.length * 8) / 2 : key.length * 8;
  if (![128, 192, 256].includes(bits) || (chain === "xts" && bits === 192)) {
    throw new LuksError(`unsupported key size ${key.length * 8} bits for aes-${chain}`);
  }
  const algo = `aes-${bits}-${chain}`;
  let essiv: Buffer | null = null;
  if (ivgen.startsWith("essiv:")) essiv = createHash(hashName(m[3]!)).update(key).digest();
  if (essiv && ![16, 24, 32].includes(essiv.length)) throw new LuksError(`essiv hash ${m[3]} gives a ${essiv.length * 8}-bit key, not an AES key`);

  /** The IVs of `n` sectors from `sector`, 16 bytes each. */
  function ivs(sector: number, n: number): Buffer {
    const out = Buffer.alloc(n * 16);
    if (ivgen === "null") return out;
    for (let i = 0; i < n; i++) {
      if (ivgen === "plain") out.writeUInt32LE((sector + i) % 2 ** 32, i * 16);
      else ivPlain64(out, i, sector + i);
    }
    if (essiv) {
      // ESSIV: each IV is the sector number encrypted with the salt (hash of the key): ECB does them all at once.
      const c = createCipheriv(`aes-${essiv.length * 8}-ecb`, essiv, null).setAutoPadding(false);
      return Buffer.concat([c.update(out), c.final()]);
    }
    return out;
  }

  function run(buf: Buffer, sector: number, enc: boolean): void {
    const n = buf.length / SECTOR;
    if (!Number.isInteger(n)) throw new Error("luks: internal error: not whole sectors");
    if (chain === "ecb") {
      const c = (enc ? createCipheriv : createDecipheriv)(algo, key, null).setAutoPadding(false);
      c.update(buf).copy(buf);
      c.final();
      return;
    }
    const iv = ivs(sector, n);
    for (let i = 0; i < n; i++) {
      const s = buf.subarray(i * SECTOR, (i + 1) * SECTOR);
      const c = (enc ? createCipheriv : createDecipheriv)(algo, key, iv.subarray(i * 16, i * 16 + 16)).setAutoPadding(false);
      const out = c.update(s);
      out.copy(s);
      c.final();
    }
  }

  return {
    decrypt: (buf, sector) => run(buf, sector, false),
    encrypt: (buf, sector) => run(buf, sector, true),
    description: `${algo}, IV ${ivgen}`,
  };
}
