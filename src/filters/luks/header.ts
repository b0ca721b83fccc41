// The LUKS1 header (LUKS On-Disk Format Specification 1.2.3): 592 bytes,
// big-endian, then 8 key slots. Parsed and checked here; nothing is
// trusted beyond what the checks allow (offsets within the disk, a sane
// stripe count and key size).

export const LUKS_MAGIC = Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]);
export const HEADER_SIZE = 592;
export const SECTOR = 512;
const SLOT_ACTIVE = 0x00ac71f3;
const SLOT_INACTIVE = 0x0000dead;

export interface KeySlot {
  index: number;
  iterations: number;
  salt: Buffer;
  /** Key material offset, in sectors. */
  offset: number;
  stripes: number;
}

export interface LuksHeader {
  cipherName: string;
  cipherMode: string;
  hashSpec: string;
  /** Payload offset, in sectors. */
  payloadOffset: number;
  keyBytes: number;
  mkDigest: Buffer;
  mkDigestSalt: Buffer;
  mkDigestIter: number;
  uuid: string;
  slots: KeySlot[];
}

export class LuksError extends Error {
  constructor(message: string) {
    super(`luks: ${message}`);
    this.name = "LuksError";
  }
}

function cstr(b: Buffer, at: number, len: number): string {
  const s = b.subarray(at, at + len);
  const nul = s.indexOf(0);
  return s.subarray(0, nul < 0 ? len : nul).toString("latin1");
}

/** Parse and check a LUKS1 header; `diskSize` is the size of the layer below. */
export function parseHeader(h: Buffer, diskSize: number): LuksHeader {
  if (h.length < HEADER_SIZE || !h.subarray(0, 6).equals(LUKS_MAGIC)) throw new LuksError("this disk does not contain a LUKS header");
  const version = h.readUInt16BE(6);
  if (version !== 1) throw new LuksError(`LUKS version ${version} is not supported (only LUKSv1; make images with cryptsetup --type luks1)`);
  const keyBytes = h.readUInt32BE(108);
  if (keyBytes < 16 || keyBytes > 128) throw new LuksError(`bad master key size ${keyBytes}`);
  const payloadOffset = h.readUInt32BE(104);
  if (payloadOffset * SECTOR > diskSize) throw new LuksError(`payload offset ${payloadOffset * SECTOR} is beyond the end of the disk (${diskSize})`);
  const slots: KeySlot[] = [];
  for (let i = 0; i < 8; i++) {
    const at = 208 + i * 48;
    const active = h.readUInt32BE(at);
    if (active === SLOT_INACTIVE) continue;
    if (active !== SLOT_ACTIVE) throw new LuksError(`key slot ${i}: corrupt (bad active marker 0x${active.toString(16)})`);
    const iterations = h.readUInt32BE(at + 4);
    const offset = h.readUInt32BE(at + 40);
    const stripes = h.readUInt32BE(at + 44);
    if (iterations < 1) throw new LuksError(`key slot ${i}: zero iterations`);
    if (stripes < 1 || stripes > 100_000) throw new LuksError(`key slot ${i}: bad stripe count ${stripes}`);
    const end = offset * SECTOR + Math.ceil((keyBytes * stripes) / SECTOR) * SECTOR;
    if (offset * SECTOR < HEADER_SIZE || end > diskSize) throw new LuksError(`key slot ${i}: key material at sector ${offset} is outside the disk`);
    slots.push({ index: i, iterations, salt: Buffer.from(h.subarray(at + 8, at + 40)), offset, stripes });
  }
  const mkDigestIter = h.readUInt32BE(164);
  if (mkDigestIter < 1) throw new LuksError("zero master key digest iterations");
  return {
    cipherName: cstr(h, 8, 32),
    cipherMode: cstr(h, 40, 32),
    hashSpec: cstr(h, 72, 32),
    payloadOffset,
    keyBytes,
    mkDigest: Buffer.from(h.subarray(112, 132)),
    mkDigestSalt: Buffer.from(h.subarray(132, 164)),
    mkDigestIter,
    uuid: cstr(h, 168, 40),
    slots,
  };
}
