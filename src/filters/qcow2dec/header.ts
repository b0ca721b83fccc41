// The qcow2 header (qemu docs/interop/qcow2.txt), versions 2 and 3, with
// the checks that decide whether an image can be served as raw here.

import { DecodeError, type Source } from "../kit/decode/reader.js";

export const QCOW2_MAGIC = 0x514649fb;

export interface Qcow2Header {
  version: number;
  clusterBits: number;
  clusterSize: number;
  size: number;
  l1Size: number;
  l1Offset: number;
  /** 0 zlib (raw deflate), 1 zstd. */
  compression: number;
  /** Bits of an L2 entry's compressed descriptor that hold the host offset. */
  csizeShift: number;
}

function fail(msg: string): never {
  throw new DecodeError(`qcow2dec: ${msg}`);
}

function u64(b: Buffer, at: number, what: string): number {
  const v = b.readBigUInt64BE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail(`${what} (${v}) is too large`);
  return Number(v);
}

const INCOMPAT = ["dirty", "corrupt", "external data file", "compression type", "extended L2 entries"];

export async function readHeader(src: Source): Promise<Qcow2Header> {
  if (src.size < 72) fail(`not a qcow2 image (only ${src.size} bytes)`);
  const h = await src.read(0, Math.min(src.size, 112), "the header");
  if (h.readUInt32BE(0) !== QCOW2_MAGIC) fail("not a qcow2 image (no QFI\\xfb magic)");
  const version = h.readUInt32BE(4);
  if (version !== 2 && version !== 3) fail(`qcow2 version ${version} is not supported (only 2 and 3)`);
  const backingOffset = u64(h, 8, "backing file offset");
  if (backingOffset !== 0) {
    const len = Math.min(h.readUInt32BE(16), 1023);
    let name = "";
    if (backingOffset + len <= src.size) name = (await src.read(backingOffset, len, "the backing file name")).toString("utf8");
    fail(`the image has a backing file${name ? ` ('${name}')` : ""}, which this filter does not read: flatten it first (qemu-img convert -O qcow2)`);
  }
  const clusterBits = h.readUInt32BE(20);
  if (clusterBits < 9 || clusterBits > 21) fail(`cluster_bits ${clusterBits} is out of range (9..21)`);
  const size = u64(h, 24, "virtual size");
  const crypt = h.readUInt32BE(32);
  if (crypt !== 0) fail(`the image is encrypted (${crypt === 1 ? "AES" : crypt === 2 ? "LUKS" : `method ${crypt}`}), which this filter does not decrypt`);
  const l1Size = h.readUInt32BE(36);
  const l1Offset = u64(h, 40, "L1 table offset");
  let compression = 0;
  if (version === 3) {
    if (h.length < 104) fail("truncated version 3 header");
    const incompat = h.readBigUInt64BE(72);
    const headerLength = h.readUInt32BE(100);
    if (headerLength < 104 || headerLength > src.size) fail(`bad header length ${headerLength}`);
    const names: string[] = [];
    for (let bit = 0n; bit < 64n; bit++) {
      if (!(incompat & (1n << bit))) continue;
      if (bit === 0n || bit === 1n || bit === 3n) continue; // dirty/corrupt: refcounts only; compression type: below
      names.push(INCOMPAT[Number(bit)] ?? `unknown feature bit ${bit}`);
    }
    if (names.length) fail(`the image uses incompatible features this filter does not support: ${names.join(", ")}`);
    if (incompat & 8n) {
      if (headerLength < 105 || h.length < 105) fail("compression type bit set but the header has no compression type");
      compression = h[104]!;
      if (compression > 1) fail(`unknown compression type ${compression}`);
    }
    const order = h.readUInt32BE(96);
    if (order > 6) fail(`bad refcount order ${order}`);
  }
  const clusterSize = 2 ** clusterBits;
  const l2Entries = clusterSize / 8;
  const need = Math.ceil(size / (clusterSize * l2Entries));
  if (l1Size < need) fail(`L1 table has ${l1Size} entries, ${need} are needed for ${size} bytes`);
  if (l1Size > 32 << 20 >> 3) fail(`L1 table of ${l1Size} entries is too large`);
  if (l1Offset % clusterSize !== 0) fail(`L1 table offset ${l1Offset} is not cluster-aligned`);
  return { version, clusterBits, clusterSize, size, l1Size, l1Offset, compression, csizeShift: 62 - (clusterBits - 8) };
}
