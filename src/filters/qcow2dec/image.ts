// A qcow2 image served as raw: guest offsets mapped through the L1 and L2
// tables. L2 tables are read on demand and kept in an LRU (about 32 MiB of
// them); compressed clusters are decoded once while they stay in a
// smaller LRU; data clusters are read straight from the file.

import { inflateRawSync } from "node:zlib";
import { decompress as zstdDecompress } from "fzstd";
import type { Extent } from "../../backend/types.js";
import { BlockCache } from "../kit/decode/cache.js";
import type { DecodedImage } from "../kit/decode/image.js";
import { DecodeError, type Source } from "../kit/decode/reader.js";
import { frameLength } from "../zstd/format.js";
import type { Qcow2Header } from "./header.js";

const OFFSET_MASK = 0x00fffffffffffe00n; // bits 9..55
const COMPRESSED = 1n << 62n;
const ZERO = 1n;
/** Extents walks at most this many clusters per request (the rest is asked for again). */
const MAX_EXTENT_CLUSTERS = 1 << 16;

type Cluster =
  | { kind: "unallocated" }
  | { kind: "zero" }
  | { kind: "data"; host: number }
  | { kind: "compressed"; host: number; csize: number };

function fail(msg: string): never {
  throw new DecodeError(`qcow2dec: ${msg}`);
}

export class Qcow2Image implements DecodedImage {
  readonly size: number;
  readonly summary: string;
  private readonly l2Cache: BlockCache<BigUint64Array>;
  private readonly zCache: BlockCache<Buffer>;
  private readonly l2Entries: number;

  constructor(
    private readonly src: Source,
    private readonly h: Qcow2Header,
    private readonly l1: BigUint64Array,
  ) {
    this.size = h.size;
    this.l2Entries = h.clusterSize / 8;
    this.l2Cache = new BlockCache(Math.max(4, (32 << 20) / h.clusterSize));
    this.zCache = new BlockCache(Math.max(4, (16 << 20) / h.clusterSize));
    this.summary = `qcow2 v${h.version}, ${h.clusterSize}-byte clusters, ${h.compression ? "zstd" : "zlib"} compression`;
  }

  static async open(src: Source, h: Qcow2Header): Promise<Qcow2Image> {
    const raw = await src.read(h.l1Offset, h.l1Size * 8, "the L1 table");
    const l1 = new BigUint64Array(h.l1Size);
    for (let i = 0; i < h.l1Size; i++) l1[i] = raw.readBigUInt64BE(i * 8);
    return new Qcow2Image(src, h, l1);
  }

  private l2(i: number): Promise<BigUint64Array | null> | null {
    const off = Number(this.l1[i]! & OFFSET_MASK);
    if (off === 0) return null;
    if (off % this.h.clusterSize !== 0) fail(`L1 entry ${i}: L2 table offset ${off} is not cluster-aligned`);
    return this.l2Cache.get(off, async () => {
      const raw = await this.src.read(off, this.h.clusterSize, `L2 table ${i}`);
      const t = new BigUint64Array(this.l2Entries);
      for (let k = 0; k < this.l2Entries; k++) t[k] = raw.readBigUInt64BE(k * 8);
      return t;
    });
  }

  /** What guest cluster `c` is. */
  private async cluster(c: number): Promise<Cluster> {
    const t = await this.l2(Math.floor(c / this.l2Entries));
    if (!t) return { kind: "unallocated" };
    const e = t[c % this.l2Entries]!;
    if (e & COMPRESSED) {
      const shift = BigInt(this.h.csizeShift);
      const host = Number(e & ((1n << shift) - 1n));
      const sectors = Number((e >> shift) & ((1n << (62n - shift)) - 1n)) + 1;
      return { kind: "compressed", host, csize: sectors * 512 - (host & 511) };
    }
    const host = Number(e & OFFSET_MASK);
    if (this.h.version === 3 && e & ZERO) return { kind: "zero" };
    if (host === 0) return { kind: "unallocated" };
    if (e & 0x1fen && this.h.version === 3) fail(`guest cluster ${c}: reserved bits set in its L2 entry`);
    if (host % this.h.clusterSize !== 0) fail(`guest cluster ${c}: host offset ${host} is not cluster-aligned`);
    return { kind: "data", host };
  }

  private compressedCluster(c: Cluster & { kind: "compressed" }, guest: number): Promise<Buffer> {
    return this.zCache.get(c.host, async () => {
      // The last compressed cluster may end in the middle of its last sector.
      const len = Math.min(c.csize, this.src.size - c.host);
      const raw = await this.src.read(c.host, Math.max(len, 0), `compressed cluster ${guest}`);
      let out: Buffer;
      try {
        if (this.h.compression === 0) out = inflateRawSync(raw, { maxOutputLength: this.h.clusterSize });
        else {
          out = Buffer.alloc(this.h.clusterSize);
          const got = zstdDecompress(raw.subarray(0, frameLength(raw)), out);
          if (got.length !== out.length) throw new Error(`${got.length} bytes`);
        }
      } catch (err) {
        throw new DecodeError(`qcow2dec: compressed cluster ${guest} (at ${c.host}): corrupt (${(err as Error).message})`);
      }
      if (out.length !== this.h.clusterSize) fail(`compressed cluster ${guest} decodes to ${out.length} bytes, not ${this.h.clusterSize}`);
      return out;
    });
  }

  async pread(buf: Buffer, offset: number): Promise<void> {
    const cs = this.h.clusterSize;
    let done = 0;
    while (done < buf.length) {
      const pos = offset + done;
      const c = Math.floor(pos / cs);
      const within = pos - c * cs;
      let n = Math.min(cs - within, buf.length - done);
      const cl = await this.cluster(c);
      if (cl.kind === "data") {
        // Extend over following clusters that are contiguous in the file: one read below.
        while (done + n < buf.length) {
          const next = await this.cluster(c + Math.ceil((within + n) / cs));
          if (next.kind !== "data" || next.host !== cl.host + within + n) break;
          n += Math.min(cs, buf.length - done - n);
        }
        await this.src.readInto(buf.subarray(done, done + n), cl.host + within, `guest cluster ${c}`);
      } else if (cl.kind === "compressed") {
        (await this.compressedCluster(cl, c)).copy(buf, done, within, within + n);
      } else {
        buf.fill(0, done, done + n);
      }
      done += n;
    }
  }

  async extents(count: number, offset: number, reqOne: boolean): Promise<Extent[]> {
    const cs = this.h.clusterSize;
    const end = Math.min(this.size, offset + count);
    const out: Extent[] = [];
    let pos = offset;
    for (let visited = 0; pos < end && visited < MAX_EXTENT_CLUSTERS; visited++) {
      const c = Math.floor(pos / cs);
      const l2 = this.l2(Math.floor(c / this.l2Entries));
      let len: number;
      let type: number;
      if (!l2) {
        // A whole L2 range unallocated at once.
        len = (Math.floor(c / this.l2Entries) + 1) * this.l2Entries * cs - pos;
        type = 3;
      } else {
        const cl = await this.cluster(c);
        len = (c + 1) * cs - pos;
        type = cl.kind === "unallocated" || cl.kind === "zero" ? 3 : 0;
      }
      len = Math.min(len, end - pos);
      const last = out[out.length - 1];
      if (last && last.type === type) last.length += len;
      else {
        if (reqOne && last) break;
        out.push({ length: len, type });
      }
      pos += len;
    }
    return out;
  }

  async dispose(): Promise<void> {
    this.l2Cache.clear();
    this.zCache.clear();
  }
}
