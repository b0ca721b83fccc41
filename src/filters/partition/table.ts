// Reading a partition table through a context of the layer below: MBR
// (primary partitions 1-4, logical partitions 5+ in an extended partition's
// chain of EBRs) and GPT (the primary header and its entry array, both
// checked by CRC32; partition N is entry N). Sectors are 512 bytes.
//
// The table is untrusted: every number is checked, the EBR chain is bounded
// and loops are detected, and a partition that does not fit in the disk or
// overlaps the table itself is recorded with the reason instead of served.

import { crc32 } from "node:zlib";
import type { Context } from "../../backend/types.js";

export const SECTOR = 512;
/** At most this many logical partitions are followed in an EBR chain. */
const MAX_LOGICAL = 128;
/** GPT: at most this many entries and this many bytes of entries. */
const MAX_GPT_ENTRIES = 1024;
const MAX_GPT_BYTES = 1 << 20;

export interface Partition {
  /** Partition number, from 1. */
  number: number;
  /** Byte offset and size in the disk. */
  start: number;
  size: number;
  /** e.g. "MBR type 0x83 (Linux), 16 MiB". */
  description: string;
  /** Set when the partition is not served (e.g. beyond the end of the disk). */
  problem?: string;
}

export interface PartitionTable {
  scheme: "mbr" | "gpt";
  partitions: Partition[];
}

/** A corrupt or missing partition table. */
export class PartitionError extends Error {}

const MBR_TYPES: Record<number, string> = {
  0x01: "FAT12", 0x04: "FAT16", 0x06: "FAT16", 0x07: "NTFS/exFAT", 0x0b: "FAT32", 0x0c: "FAT32 LBA",
  0x0e: "FAT16 LBA", 0x82: "Linux swap", 0x83: "Linux", 0x8e: "Linux LVM", 0xa5: "FreeBSD",
  0xee: "GPT protective", 0xef: "EFI System", 0xfd: "Linux RAID", 0x05: "Extended", 0x0f: "Extended LBA", 0x85: "Linux extended",
};
const EXTENDED = new Set([0x05, 0x0f, 0x85]);

const GPT_TYPES: Record<string, string> = {
  "0FC63DAF-8483-4772-8E79-3D69D8477DE4": "Linux filesystem",
  "C12A7328-F81F-11D2-BA4B-00A0C93EC93B": "EFI System",
  "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F": "Linux swap",
  "E6D6D379-F507-44C2-A23C-238F2A3DF928": "Linux LVM",
  "A19D880F-05FC-4D3B-A006-743F0F84911E": "Linux RAID",
  "21686148-6449-6E6F-744E-656564454649": "BIOS boot",
  "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7": "Microsoft basic data",
};

export function humanSize(n: number): string {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1 && v % 1024 === 0) {
    v /= 1024;
    i++;
  }
  return `${v} ${units[i]}`;
}

async function read(ctx: Context, disk: number, off: number, len: number, what: string): Promise<Buffer> {
  if (off < 0 || off + len > disk) throw new PartitionError(`${what} at offset ${off} is beyond the end of the disk (${disk} bytes)`);
  const b = Buffer.alloc(len);
  await ctx.pread(b, off, 0);
  return b;
}

function u64(b: Buffer, at: number, what: string): number {
  const v = b.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new PartitionError(`corrupt GPT: ${what} too large`);
  return Number(v);
}

function guid(b: Buffer): string {
  const h = (s: number, e: number, le: boolean) => {
    const part = Buffer.from(b.subarray(s, e));
    return (le ? part.reverse() : part).toString("hex");
  };
  return `${h(0, 4, true)}-${h(4, 6, true)}-${h(6, 8, true)}-${h(8, 10, false)}-${h(10, 16, false)}`.toUpperCase();
}

/** A GPT partition name: UTF-16LE up to NUL, control characters replaced. */
function gptName(b: Buffer): string {
  let end = 0;
  while (end + 1 < b.length && (b[end] !== 0 || b[end + 1] !== 0)) end += 2;
  return b.toString("utf16le", 0, end).replace(/[\u0000-\u001f\u007f-\u009f\ufffd'\\]/g, "?");
}

function place(p: Partition, disk: number, tableEnd: number): Partition {
  if (p.start < tableEnd) p.problem = `partition ${p.number} starts inside the partition table`;
  else if (p.start + p.size > disk) {
    p.problem = `partition ${p.number} (offset ${p.start}, ${p.size} bytes) runs past the end of the disk (${disk} bytes)`;
  }
  return p;
}

/** Read the partition table of the disk in `ctx`. */
export async function readTable(ctx: Context): Promise<PartitionTable> {
  const disk = await ctx.getSize();
  if (disk < SECTOR) throw new PartitionError(`no partition table: the disk is only ${disk} bytes`);
  const mbr = await read(ctx, disk, 0, SECTOR, "MBR");
  if (mbr[510] !== 0x55 || mbr[511] !== 0xaa) throw new PartitionError("no partition table: no MBR boot signature (0x55AA)");
  const entries = [0, 1, 2, 3].map((i) => {
    const e = mbr.subarray(446 + 16 * i, 462 + 16 * i);
    return { type: e[4]!, lba: e.readUInt32LE(8), sectors: e.readUInt32LE(12) };
  });
  if (entries.some((e) => e.type === 0xee)) return { scheme: "gpt", partitions: await readGpt(ctx, disk) };

  const parts: Partition[] = [];
  const mbrDesc = (type: number, size: number, logical = false) =>
    `${logical ? "MBR logical" : "MBR"} type 0x${type.toString(16).padStart(2, "0")}` +
    `${MBR_TYPES[type] ? ` (${MBR_TYPES[type]})` : ""}, ${humanSize(size)}`;
  let extended: { start: number; size: number } | null = null;
  for (const [i, e] of entries.entries()) {
    if (e.type === 0 || e.sectors === 0) continue;
    const p: Partition = { number: i + 1, start: e.lba * SECTOR, size: e.sectors * SECTOR, description: mbrDesc(e.type, e.sectors * SECTOR) };
    parts.push(place(p, disk, SECTOR));
    if (EXTENDED.has(e.type)) {
      // The extended partition only holds the logical ones (5+): it is not
      // served, nor listed (nbdkit: "MBR partition 3 not found").
      p.problem ??= `MBR partition ${p.number} is an extended partition (a container of the logical partitions 5 and up), not a partition to serve`;
      if (!extended) extended = { start: e.lba, size: e.sectors };
    }
  }
  if (extended) parts.push(...(await readLogical(ctx, disk, extended, mbrDesc)));
  return { scheme: "mbr", partitions: parts };
}

/** The chain of EBRs inside the extended partition (LBAs in sectors). */
async function readLogical(
  ctx: Context, disk: number, ext: { start: number; size: number },
  desc: (type: number, size: number, logical: boolean) => string,
): Promise<Partition[]> {
  const out: Partition[] = [];
  const seen = new Set<number>();
  let ebr = ext.start;
  for (let n = 5; n < 5 + MAX_LOGICAL; n++) {
    if (seen.has(ebr)) throw new PartitionError(`corrupt MBR: the chain of logical partitions loops (EBR at sector ${ebr})`);
    seen.add(ebr);
    if (ebr < ext.start || ebr >= ext.start + ext.size) {
      throw new PartitionError(`corrupt MBR: an EBR (sector ${ebr}) lies outside the extended partition`);
    }
    const b = await read(ctx, disk, ebr * SECTOR, SECTOR, "EBR");
    if (b[510] !== 0x55 || b[511] !== 0xaa) throw new PartitionError(`corrupt MBR: the EBR at sector ${ebr} has no boot signature`);
    const type = b[446 + 4]!;
    const rel = b.readUInt32LE(446 + 8);
    const sectors = b.readUInt32LE(446 + 12);
    if (type !== 0 && sectors !== 0) {
      const start = (ebr + rel) * SECTOR;
      out.push(place({ number: n, start, size: sectors * SECTOR, description: desc(type, sectors * SECTOR, true) }, disk, (ebr + 1) * SECTOR));
    }
    const nextType = b[462 + 4]!;
    const nextRel = b.readUInt32LE(462 + 8);
    if (!EXTENDED.has(nextType) || nextRel === 0) return out;
    ebr = ext.start + nextRel;
  }
  throw new PartitionError(`corrupt MBR: more than ${MAX_LOGICAL} logical partitions`);
}

async function readGpt(ctx: Context, disk: number): Promise<Partition[]> {
  const hdr = await read(ctx, disk, SECTOR, SECTOR, "GPT header");
  if (hdr.toString("latin1", 0, 8) !== "EFI PART") throw new PartitionError("corrupt GPT: no 'EFI PART' signature in sector 1");
  const hsize = hdr.readUInt32LE(12);
  if (hsize < 92 || hsize > SECTOR) throw new PartitionError(`corrupt GPT: header size ${hsize}`);
  const h = Buffer.from(hdr.subarray(0, hsize));
  const stored = h.readUInt32LE(16);
  h.writeUInt32LE(0, 16);
  if (crc32(h) !== stored) throw new PartitionError("corrupt GPT: header CRC32 mismatch");
  const entriesLba = u64(hdr, 72, "entry array LBA");
  const count = hdr.readUInt32LE(80);
  const esize = hdr.readUInt32LE(84);
  if (esize < 128 || esize % 8 !== 0 || esize > 4096) throw new PartitionError(`corrupt GPT: entry size ${esize}`);
  if (count > MAX_GPT_ENTRIES || count * esize > MAX_GPT_BYTES) throw new PartitionError(`corrupt GPT: ${count} entries`);
  if (entriesLba < 2) throw new PartitionError(`corrupt GPT: entry array at LBA ${entriesLba}`);
  const arr = await read(ctx, disk, entriesLba * SECTOR, count * esize, "GPT entry array");
  if (crc32(arr) !== hdr.readUInt32LE(88)) throw new PartitionError("corrupt GPT: partition entry array CRC32 mismatch");
  const tableEnd = entriesLba * SECTOR + count * esize;
  const out: Partition[] = [];
  for (let i = 0; i < count; i++) {
    const e = arr.subarray(i * esize, (i + 1) * esize);
    if (e.subarray(0, 16).every((c) => c === 0)) continue; // unused entry
    const first = u64(e, 32, "first LBA");
    const last = u64(e, 40, "last LBA");
    const type = guid(e.subarray(0, 16));
    const name = gptName(e.subarray(56, 128));
    const number = i + 1;
    if (last < first) {
      out.push({ number, start: 0, size: 0, description: "", problem: `partition ${number} ends before it starts` });
      continue;
    }
    const size = (last - first + 1) * SECTOR;
    const description =
      `GPT type ${type}${GPT_TYPES[type] ? ` (${GPT_TYPES[type]})` : ""}` + `${name ? `, name '${name}'` : ""}, ${humanSize(size)}`;
    out.push(place({ number, start: first * SECTOR, size, description }, disk, tableEnd));
  }
  return out;
}
