// What a decoding filter serves: a read-only image of `size` bytes made
// from the data below (decompressed, or mapped through a cluster table).

import type { Extent } from "../../../backend/types.js";
import { BlockCache } from "./cache.js";
import { DecodeError } from "./reader.js";
import type { TempFile } from "./tempfile.js";

export interface DecodedImage {
  readonly size: number;
  /** Fill buf with the image's bytes at offset (within size). */
  pread(buf: Buffer, offset: number): Promise<void>;
  /** Block status; without it the whole image is data. */
  extents?(count: number, offset: number, reqOne: boolean): Promise<Extent[]>;
  /** One line for -v and the manual's "how it is served" (e.g. "42 blocks"). */
  readonly summary: string;
  dispose?(): Promise<void>;
}

/** A run of the image that decodes on its own: an xz block, a zstd frame, an lzip member. */
export interface BlockEntry {
  /** Offset of the block's first byte in the image. */
  uoff: number;
  /** Uncompressed size. */
  usize: number;
}

/**
 * An image made of independently decodable blocks, each decoded at most
 * once while it stays in the LRU (`depth` blocks, shared by every client
 * of the export).
 */
export class BlockImage<B extends BlockEntry> implements DecodedImage {
  readonly size: number;
  private readonly blocks: B[];
  private readonly cache: BlockCache<Buffer>;

  constructor(
    blocks: B[],
    private readonly decodeBlock: (b: B) => Promise<Buffer>,
    depth: number,
    readonly summary: string,
    private readonly what: string,
  ) {
    this.blocks = blocks.filter((b) => b.usize > 0);
    const last = this.blocks[this.blocks.length - 1];
    this.size = last ? last.uoff + last.usize : 0;
    this.cache = new BlockCache(depth);
  }

  get count(): number {
    return this.blocks.length;
  }

  /** Index of the block holding image offset `off` (off < size). */
  private find(off: number): number {
    let lo = 0;
    let hi = this.blocks.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.blocks[mid]!.uoff <= off) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  block(i: number): Promise<Buffer> {
    const b = this.blocks[i]!;
    return this.cache.get(i, async () => {
      const data = await this.decodeBlock(b);
      if (data.length !== b.usize) {
        throw new DecodeError(`${this.what}: block at ${b.uoff} decoded to ${data.length} bytes, the index says ${b.usize}`);
      }
      return data;
    });
  }

  async pread(buf: Buffer, offset: number): Promise<void> {
    let done = 0;
    for (let i = this.find(offset); done < buf.length; i++) {
      const b = this.blocks[i]!;
      const data = await this.block(i);
      const from = offset + done - b.uoff;
      done += data.copy(buf, done, from, Math.min(data.length, from + buf.length - done));
    }
  }

  async dispose(): Promise<void> {
    this.cache.clear();
  }
}

/** An image decompressed once, whole, into a hidden temporary file. */
export class TempFileImage implements DecodedImage {
  constructor(
    private readonly file: TempFile,
    readonly summary: string,
  ) {}

  get size(): number {
    return this.file.size;
  }

  pread(buf: Buffer, offset: number): Promise<void> {
    return this.file.read(buf, offset);
  }

  dispose(): Promise<void> {
    return this.file.close();
  }
}
