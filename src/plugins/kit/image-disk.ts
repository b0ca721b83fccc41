// A read-only disk built once at startup from one image file, served bare
// (iso) or as the single partition of a virtual MBR/GPT disk (linuxdisk,
// floppy). The plugin callbacks every such plugin shares.

import type { FileHandle } from "node:fs/promises";
import type { Plugin } from "../../backend/types.js";
import { buildLayout, type DiskLayout, type PartitionSpec, type TableType } from "./partition-table.js";
import { readRegions, regionExtents, type PartitionIO } from "./region-disk.js";
import { NbdError } from "../../backend/types.js";
import { NBD_EIO } from "../../protocol/constants.js";

export class ImageDisk {
  private constructor(
    readonly fh: FileHandle,
    readonly layout: DiskLayout,
    private readonly io: PartitionIO,
  ) {}

  /** The image as partition 1 of a `type` disk. */
  static partitioned(fh: FileHandle, imageSize: number, type: TableType, part: Omit<PartitionSpec, "size">, bootable: boolean): ImageDisk {
    const layout = buildLayout(type, [{ ...part, size: imageSize }], { bootFirst: bootable });
    return new ImageDisk(fh, layout, { read: (_i, buf, off) => readAll(fh, buf, off) });
  }

  /** The image itself, as the whole disk. */
  static bare(fh: FileHandle, imageSize: number): ImageDisk {
    const layout: DiskLayout = { type: "mbr", size: imageSize, regions: [{ kind: "part", start: 0, length: imageSize, index: 0 }], partStart: [0] };
    return new ImageDisk(fh, layout, { read: (_i, buf, off) => readAll(fh, buf, off) });
  }

  get size(): number {
    return this.layout.size;
  }
  pread(buf: Buffer, offset: number): Promise<void> {
    return readRegions(this.layout, this.io, buf, offset);
  }
  async close(): Promise<void> {
    await this.fh.close().catch(() => {});
  }
}

async function readAll(fh: FileHandle, buf: Buffer, offset: number): Promise<void> {
  let pos = 0;
  while (pos < buf.length) {
    const { bytesRead } = await fh.read(buf, pos, buf.length - pos, offset + pos);
    if (bytesRead === 0) throw new NbdError(NBD_EIO, "the temporary image is shorter than expected");
    pos += bytesRead;
  }
}

/** The data callbacks of a read-only image plugin (nbdkit's: multi-conn, cache emulated). */
export function imageCallbacks(disk: () => ImageDisk): Pick<
  Plugin<true>, "open" | "getSize" | "canWrite" | "canMultiConn" | "canCache" | "canExtents" | "pread" | "extents"
> {
  return {
    open: () => true,
    getSize: () => disk().size,
    canWrite: () => false,
    canMultiConn: () => true,
    canCache: () => "emulate",
    canExtents: () => true,
    pread: (_h, buf, offset) => disk().pread(buf, offset),
    extents: (_h, count, offset) => regionExtents(disk().layout, count, offset),
  };
}
