// A virtual partitioned disk: partitions (each backed by something else:
// a file, a temporary image) laid out after an MBR or a GPT, as the
// partitioning, linuxdisk and floppy plugins serve them. The layout follows
// nbdkit's partitioning plugin sector for sector, so an MBR disk built here
// is byte-identical to nbdkit's for the same files.

import { crc32 } from "node:zlib";
import { parseGuid, randomGuid } from "./guid.js";

export const SECTOR = 512;
/** Largest alignment= accepted (and the default): 1 MiB, 2048 sectors. */
export const MAX_ALIGNMENT = 2048 * SECTOR;
export const DEFAULT_MBR_ID = 0x83;
export const DEFAULT_TYPE_GUID = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
/** What 32-bit sector numbers can address, less room for alignment padding (as nbdkit). */
export const MAX_MBR_DISK_SIZE = 0xffffffff * SECTOR - 5 * MAX_ALIGNMENT;
const GPT_ENTRY_SIZE = 128;
const GPT_MIN_ENTRIES = 128;

export type TableType = "mbr" | "gpt";

export interface PartitionSpec {
  /** Bytes of partition content (the partition is rounded up to whole sectors). */
  size: number;
  /** The partition starts at a multiple of this (bytes, a multiple of 512). */
  alignment: number;
  /** MBR type byte. */
  mbrId: number;
  /** GPT partition type GUID, on-disk bytes. */
  typeGuid: Buffer;
  /** GPT partition name (at most 36 UTF-16 code units are kept). */
  name?: string;
}

/** A byte range of the virtual disk: table sectors, zero padding, or partition content. */
export type Region =
  | { kind: "data"; start: number; length: number; data: Buffer }
  | { kind: "zero"; start: number; length: number }
  | { kind: "part"; start: number; length: number; index: number };

export interface DiskLayout {
  type: TableType;
  size: number;
  /** Contiguous, in order, covering [0, size). */
  regions: Region[];
  /** Where partition i starts on the virtual disk. */
  partStart: number[];
  /** GPT only: the disk GUID and each partition's unique GUID (on-disk bytes). */
  diskGuid?: Buffer;
  partGuids?: Buffer[];
}

export interface LayoutOptions {
  /** Mark the first partition bootable (MBR 0x80, GPT attribute bit 2), as nbdkit's partitioning does. */
  bootFirst: boolean;
}

/** The default type GUID, parsed. */
export function defaultTypeGuid(): Buffer {
  return parseGuid(DEFAULT_TYPE_GUID)!;
}

/** nbdkit's choice when partition-type= is not given. */
export function chooseTableType(parts: readonly PartitionSpec[]): TableType {
  const total = parts.reduce((s, p) => s + p.size, 0);
  return parts.length > 4 || total > MAX_MBR_DISK_SIZE ? "gpt" : "mbr";
}

class Builder {
  readonly regions: Region[] = [];
  size = 0;

  pad(alignment: number): void {
    const r = this.size % alignment;
    if (r !== 0) this.push({ kind: "zero", start: this.size, length: alignment - r });
  }
  data(data: Buffer): Region & { kind: "data" } {
    const r = { kind: "data" as const, start: this.size, length: data.length, data };
    this.push(r);
    return r;
  }
  part(index: number, length: number): Region & { kind: "part" } {
    const r = { kind: "part" as const, start: this.size, length, index };
    this.push(r);
    return r;
  }
  private push(r: Region): void {
    this.regions.push(r);
    this.size += r.length;
  }
}

/** Lay out the disk and fill in its partition table(s). */
export function buildLayout(type: TableType, parts: readonly PartitionSpec[], opts: LayoutOptions): DiskLayout {
  if (parts.length === 0) throw new Error("at least one partition is needed");
  if (type === "mbr" && parts.reduce((s, p) => s + p.size, 0) > MAX_MBR_DISK_SIZE) {
    throw new Error(`an MBR partition table addresses at most about 2 TB (${MAX_MBR_DISK_SIZE} bytes of partitions); use partition-type=gpt`);
  }
  return type === "mbr" ? buildMbr(parts, opts) : buildGpt(parts, opts);
}

/** Lay out partition i: [EBR,] padding to its alignment, content, padding to a whole sector. */
function addPartition(b: Builder, i: number, p: PartitionSpec): Region & { kind: "part" } {
  b.pad(p.alignment);
  const r = b.part(i, p.size);
  b.pad(SECTOR);
  return r;
}

/** An MBR partition table entry at `out` (16 bytes); CHS fields say "too large", as usual for LBA. */
function mbrEntry(out: Buffer, startSector: number, sectors: number, type: number, bootable: boolean): void {
  if (startSector > 0xffffffff || sectors > 0xffffffff) throw new Error("partition beyond what MBR can address");
  out[0] = bootable ? 0x80 : 0;
  chsTooLarge(out, 1);
  out[4] = type;
  chsTooLarge(out, 5);
  out.writeUInt32LE(startSector, 8);
  out.writeUInt32LE(sectors, 12);
}

function chsTooLarge(out: Buffer, at: number): void {
  const c = 1023, h = 254, s = 63;
  out[at] = h;
  out[at + 1] = ((c & 0x300) >> 2) | s;
  out[at + 2] = c & 0xff;
}

const sectorsOf = (bytes: number) => Math.ceil(bytes / SECTOR);

function buildMbr(parts: readonly PartitionSpec[], opts: LayoutOptions): DiskLayout {
  const b = new Builder();
  const mbr = Buffer.alloc(SECTOR);
  b.data(mbr);
  const logical = parts.length > 4;
  const ebrs: (Region & { kind: "data" })[] = [];
  const regs: (Region & { kind: "part" })[] = [];
  parts.forEach((p, i) => {
    // Logical partitions (5 and up, from the 4th file) each follow their EBR.
    if (logical && i >= 3) ebrs.push(b.data(Buffer.alloc(SECTOR)));
    regs.push(addPartition(b, i, p));
  });
  mbr[0x1fe] = 0x55;
  mbr[0x1ff] = 0xaa;
  const primaries = logical ? 3 : parts.length;
  for (let i = 0; i < primaries; i++) {
    const r = regs[i]!;
    mbrEntry(mbr.subarray(0x1be + 16 * i), r.start / SECTOR, sectorsOf(r.length), parts[i]!.mbrId, opts.bootFirst && i === 0);
  }
  if (logical) {
    // Partition 4: the extended partition, from the first EBR to the end of the disk.
    const e0 = ebrs[0]!;
    mbrEntry(mbr.subarray(0x1ee), e0.start / SECTOR, sectorsOf(b.size - e0.start), 0x0f, false);
    for (let i = 3; i < parts.length; i++) {
      const ebr = ebrs[i - 3]!;
      const r = regs[i]!;
      ebr.data[0x1fe] = 0x55;
      ebr.data[0x1ff] = 0xaa;
      // Entry 1: the logical partition, relative to its own EBR.
      mbrEntry(ebr.data.subarray(0x1be), (r.start - ebr.start) / SECTOR, sectorsOf(r.length), parts[i]!.mbrId, false);
      if (i < parts.length - 1) {
        // Entry 2: the next EBR, relative to the extended partition, up to the end of its partition.
        const next = ebrs[i - 2]!;
        const nr = regs[i + 1]!;
        mbrEntry(ebr.data.subarray(0x1ce), (next.start - e0.start) / SECTOR, sectorsOf(nr.start + nr.length - next.start), 0x0f, false);
      }
    }
  }
  return { type: "mbr", size: b.size, regions: b.regions, partStart: regs.map((r) => r.start) };
}

function buildGpt(parts: readonly PartitionSpec[], opts: LayoutOptions): DiskLayout {
  const entries = Math.ceil(parts.length / GPT_MIN_ENTRIES) * GPT_MIN_ENTRIES;
  const ptaSectors = (entries * GPT_ENTRY_SIZE) / SECTOR;
  const b = new Builder();
  // Protective MBR, primary header, primary entry array.
  const primary = b.data(Buffer.alloc((2 + ptaSectors) * SECTOR)).data;
  const regs = parts.map((p, i) => addPartition(b, i, p));
  // Backup entry array, then the backup header in the very last sector.
  const secondary = b.data(Buffer.alloc((ptaSectors + 1) * SECTOR)).data;
  const lbas = b.size / SECTOR;

  const diskGuid = randomGuid();
  const partGuids = parts.map(() => randomGuid());
  const pta = primary.subarray(2 * SECTOR);
  parts.forEach((p, i) => {
    const e = pta.subarray(i * GPT_ENTRY_SIZE, (i + 1) * GPT_ENTRY_SIZE);
    const r = regs[i]!;
    p.typeGuid.copy(e, 0);
    partGuids[i]!.copy(e, 16);
    e.writeBigUInt64LE(BigInt(r.start / SECTOR), 32);
    e.writeBigUInt64LE(BigInt(Math.floor((r.start + r.length - 1) / SECTOR)), 40);
    e.writeBigUInt64LE(opts.bootFirst && i === 0 ? 4n : 0n, 48); // bit 2: legacy BIOS bootable
    if (p.name) Buffer.from(p.name.slice(0, 36), "utf16le").copy(e, 56);
  });
  pta.copy(secondary, 0, 0, ptaSectors * SECTOR);
  const ptaCrc = crc32(pta.subarray(0, entries * GPT_ENTRY_SIZE));

  const header = (out: Buffer, current: number, backup: number, entriesLba: number) => {
    out.write("EFI PART", 0, "latin1");
    out.writeUInt32LE(0x00010000, 8); // revision 1.0
    out.writeUInt32LE(92, 12);
    out.writeBigUInt64LE(BigInt(current), 24);
    out.writeBigUInt64LE(BigInt(backup), 32);
    out.writeBigUInt64LE(BigInt(2 + ptaSectors), 40); // first usable LBA
    out.writeBigUInt64LE(BigInt(lbas - ptaSectors - 2), 48); // last usable LBA
    diskGuid.copy(out, 56);
    out.writeBigUInt64LE(BigInt(entriesLba), 72);
    out.writeUInt32LE(entries, 80);
    out.writeUInt32LE(GPT_ENTRY_SIZE, 84);
    out.writeUInt32LE(ptaCrc, 88);
    out.writeUInt32LE(crc32(out.subarray(0, 92)), 16); // computed with its own field zero
  };
  header(primary.subarray(SECTOR, 2 * SECTOR), 1, lbas - 1, 2);
  header(secondary.subarray(ptaSectors * SECTOR), lbas - 1, 1, lbas - ptaSectors - 1);

  // Protective MBR: one 0xEE partition over the whole disk (or what 32 bits reach).
  const end = Math.min(b.size - 1, 0xffffffff * SECTOR);
  mbrEntry(primary.subarray(0x1be), 1, sectorsOf(end - SECTOR + 1), 0xee, false);
  primary[0x1fe] = 0x55;
  primary[0x1ff] = 0xaa;
  return { type: "gpt", size: b.size, regions: b.regions, partStart: regs.map((r) => r.start), diskGuid, partGuids };
}
