// The lzip container (lzip manual, "File format"): members of
//   "LZIP" | version 1 | coded dictionary size | LZMA stream | CRC32 | data size (8) | member size (8)
// The trailer of each member gives the member's size, so a file is
// indexed from its end backwards, member by member, without decoding
// (as lzip --list does): multi-member files (plzip, lzip -b) get random
// access by member.

import type { BlockEntry } from "../kit/decode/image.js";
import { DecodeError, type Source } from "../kit/decode/reader.js";

export interface LzipMember extends BlockEntry {
  coff: number;
  msize: number;
  dict: number;
  crc: number;
}

const MAGIC = Buffer.from("LZIP", "latin1");
/** Members at most this many. */
const MAX_MEMBERS = 1 << 24;

function fail(msg: string): never {
  throw new DecodeError(`lzip: ${msg}`);
}

/** The dictionary size coded in a header byte, or 0 if invalid (lzip: 4 KiB .. 512 MiB). */
export function dictSize(coded: number): number {
  const log = coded & 0x1f;
  if (log < 12 || log > 29) return 0;
  const base = 2 ** log;
  const size = base - (base / 16) * (coded >> 5);
  return size >= 4096 ? size : 0;
}

export async function readLzipIndex(src: Source, maxMember: number): Promise<LzipMember[]> {
  if (src.size < 26) fail(`not an lzip file (only ${src.size} bytes)`);
  const head = await src.read(0, 6, "the member header");
  if (!head.subarray(0, 4).equals(MAGIC)) fail("not an lzip file (no LZIP magic at the start)");
  const members: Omit<LzipMember, "uoff">[] = [];
  for (let end = src.size; end > 0; ) {
    if (members.length >= MAX_MEMBERS) fail(`more than ${MAX_MEMBERS} members`);
    if (end < 26) fail(`truncated or corrupt file: ${end} bytes before the member at ${end} cannot hold a member`);
    const t = await src.read(end - 20, 20, "a member trailer");
    const dataBig = t.readBigUInt64LE(4);
    const sizeBig = t.readBigUInt64LE(12);
    if (sizeBig < 26n || sizeBig > BigInt(end)) {
      fail(`no valid member trailer ending at ${end} (truncated, corrupt, or trailing data after the last member)`);
    }
    const msize = Number(sizeBig);
    const coff = end - msize;
    const h = await src.read(coff, 6, "a member header");
    if (!h.subarray(0, 4).equals(MAGIC)) fail(`the trailer ending at ${end} points to ${coff}, where there is no member header`);
    if (h[4] !== 1) fail(`member at ${coff}: version ${h[4]} is not supported`);
    const dict = dictSize(h[5]!);
    if (!dict) fail(`member at ${coff}: invalid dictionary size`);
    if (dataBig > BigInt(maxMember)) {
      fail(`member at ${coff} is ${dataBig} bytes uncompressed, larger than lzip-max-block (${maxMember}): compress with a member size limit (lzip -b, plzip), or raise lzip-max-block`);
    }
    members.unshift({ coff, msize, dict, crc: t.readUInt32LE(0), usize: Number(dataBig) });
    end = coff;
  }
  let uoff = 0;
  return members.map((m) => {
    const r = { ...m, uoff };
    uoff += m.usize;
    return r;
  });
}
