// partitioning plugin: files as the partitions of a virtual MBR or GPT
// disk. The table is generated in memory; partition reads and writes go to
// the files.

import { basename } from "node:path";
import type { Plugin } from "../../backend/types.js";
import { parseSize } from "../../backend/size.js";
import { openBackingFile, readExact, type BackingFile } from "../kit/files.js";
import { parseGuid } from "../kit/guid.js";
import {
  buildLayout, chooseTableType, defaultTypeGuid, DEFAULT_MBR_ID, MAX_ALIGNMENT, SECTOR,
  type DiskLayout, type PartitionSpec, type TableType,
} from "../kit/partition-table.js";
import { readRegions, regionExtents, writeRegions, type PartitionIO } from "../kit/region-disk.js";

/** nbdkit_parse_uint8_t: decimal, 0x hex or 0 octal, 0..255. */
export function parseMbrId(value: string): number {
  const v = value.trim();
  let n = NaN;
  if (/^0x[0-9a-f]+$/i.test(v)) n = parseInt(v.slice(2), 16);
  else if (/^0[0-7]*$/.test(v)) n = parseInt(v, 8);
  else if (/^[1-9][0-9]*$/.test(v)) n = parseInt(v, 10);
  if (!(n >= 0 && n <= 255)) throw new Error(`partitioning: mbr-id: could not parse '${value}' as a byte (use 0xN, or default)`);
  return n;
}

export default function createPlugin(): Plugin<true> {
  const parts: (PartitionSpec & { path: string })[] = [];
  const files: BackingFile[] = [];
  let alignment = MAX_ALIGNMENT;
  let mbrId = DEFAULT_MBR_ID;
  let typeGuid = defaultTypeGuid();
  let tableType: TableType | undefined;
  let layout: DiskLayout | undefined;
  let writable = true;

  const io: PartitionIO = {
    read: (i, buf, off) => readExact(files[i]!, buf, off),
    async write(i, buf, off) {
      let pos = 0;
      while (pos < buf.length) {
        const { bytesWritten } = await files[i]!.fh.write(buf, pos, buf.length - pos, off + pos);
        pos += bytesWritten;
      }
    },
  };

  return {
    name: "partitioning",
    version: "1.0.0",
    longname: "nbdstate partitioning plugin",
    description: "Files as the partitions of a virtual MBR or GPT disk.",
    magicConfigKey: "file",
    configHelp:
      "file=<FILENAME>  (required) File(s) containing partitions (repeat for more).\n" +
      "partition-type=mbr|gpt      Partition table type (default: MBR if it fits).\n" +
      "alignment=<N>               Alignment of the following partitions (bytes, default 1M).\n" +
      "mbr-id=default|0xN          MBR type byte of the following partitions (default 0x83).\n" +
      "type-guid=default|GUID      GPT type GUID of the following partitions (default Linux filesystem).",

    async config(key, value) {
      switch (key) {
        case "file": {
          const f = await openBackingFile("partitioning", value, false);
          if (f.size === 0) {
            await f.fh.close();
            throw new Error(`partitioning: ${value}: zero length partitions are not allowed`);
          }
          if (f.readonly) writable = false;
          files.push(f);
          parts.push({ path: value, size: f.size, alignment, mbrId, typeGuid, name: basename(value) });
          return;
        }
        case "partition-type": {
          const v = value.toLowerCase();
          if (v === "mbr" || v === "dos") tableType = "mbr";
          else if (v === "gpt") tableType = "gpt";
          else throw new Error(`partitioning: unknown partition-type '${value}' (use mbr or gpt)`);
          return;
        }
        case "alignment": {
          let n: number;
          try {
            n = parseSize(value);
          } catch (e) {
            throw new Error(`partitioning: alignment: ${(e as Error).message}`);
          }
          if (n < SECTOR || n > MAX_ALIGNMENT || n % SECTOR !== 0) {
            throw new Error(`partitioning: alignment ${n} must be a multiple of ${SECTOR} between ${SECTOR} and ${MAX_ALIGNMENT}`);
          }
          alignment = n;
          return;
        }
        case "mbr-id":
          mbrId = value.toLowerCase() === "default" ? DEFAULT_MBR_ID : parseMbrId(value);
          return;
        case "type-guid": {
          const g = value.toLowerCase() === "default" ? defaultTypeGuid() : parseGuid(value);
          if (!g) throw new Error(`partitioning: type-guid: could not parse GUID '${value}'`);
          typeGuid = g;
          return;
        }
        default:
          throw new Error(`partitioning: unknown parameter '${key}'`);
      }
    },

    configComplete() {
      if (parts.length === 0) throw new Error("partitioning: at least one file= parameter must be supplied");
      const type = tableType ?? chooseTableType(parts);
      try {
        layout = buildLayout(type, parts, { bootFirst: true });
      } catch (e) {
        throw new Error(`partitioning: ${(e as Error).message}`);
      }
    },

    async unload() {
      for (const f of files.splice(0)) await f.fh.close().catch(() => {});
    },

    open: () => true,
    getSize: () => layout!.size,
    canWrite: () => writable,
    canFlush: () => true,
    canMultiConn: () => true,
    canExtents: () => true,
    canCache: () => "emulate",

    pread: (_h, buf, offset) => readRegions(layout!, io, buf, offset),
    pwrite: (_h, buf, offset) => writeRegions(layout!, io, buf, offset),
    async flush() {
      for (const f of files) await f.fh.datasync();
    },
    extents: (_h, count, offset) => regionExtents(layout!, count, offset),
  };
}
