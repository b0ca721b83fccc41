// A context opened on the plugin: the bottom of every stack.
//
// Capabilities are asked once and cached (nbdkit does the same per
// connection); omitted callbacks get nbdkit's documented defaults.

import { NBD_EINVAL, NBD_ENOTSUP, NBD_EPERM } from "../protocol/constants.js";
import {
  FLAG_FAST_ZERO, FLAG_FUA, NbdError,
  type BlockSize, type CacheMode, type Context, type Extent, type FuaMode, type Plugin, type ReadPiece,
} from "./types.js";

const ZERO_CHUNK = 1024 * 1024;
let zeroBuf: Buffer | null = null;
function zeros(n: number): Buffer {
  if (!zeroBuf) zeroBuf = Buffer.alloc(ZERO_CHUNK);
  return n === ZERO_CHUNK ? zeroBuf : zeroBuf.subarray(0, n);
}

type Caps = {
  size: number;
  canWrite: boolean;
  canFlush: boolean;
  isRotational: boolean;
  canTrim: boolean;
  canZero: boolean;
  canFastZero: boolean;
  canFua: FuaMode;
  canMultiConn: boolean;
  canExtents: boolean;
  canCache: CacheMode;
  blockSize: BlockSize | null;
  exportDescription: string | null;
};

export class PluginContext<H = unknown> implements Context {
  caps: Caps | null = null;

  constructor(
    readonly plugin: Plugin<H>,
    readonly handle: H,
    readonly exportName: string,
    readonly readonly: boolean,
  ) {}

  /** Ask every capability once, after prepare. */
  async loadCaps(): Promise<Caps> {
    if (this.caps) return this.caps;
    const p = this.plugin;
    const h = this.handle;
    const rawSize = await p.getSize(h);
    const size = Number(rawSize);
    if (!Number.isSafeInteger(size) || size < 0) throw new Error(`${p.name}: get_size returned an invalid size ${String(rawSize)}`);
    const canWrite = !this.readonly && (p.canWrite ? await p.canWrite(h) : !!p.pwrite);
    const canFlush = p.canFlush ? await p.canFlush(h) : !!p.flush;
    const canTrim = canWrite && (p.canTrim ? await p.canTrim(h) : !!p.trim);
    // Zero is emulated with pwrite when the plugin has no zero callback.
    const canZero = canWrite && (p.canZero ? await p.canZero(h) : true);
    // Without a zero callback, emulation fails fast, so fast zero is honest.
    const canFastZero = canZero && (p.canFastZero ? await p.canFastZero(h) : !p.zero);
    const canFua: FuaMode = !canWrite ? "none" : p.canFua ? await p.canFua(h) : canFlush ? "emulate" : "none";
    this.caps = {
      size,
      canWrite,
      canFlush,
      isRotational: p.isRotational ? await p.isRotational(h) : false,
      canTrim,
      canZero,
      canFastZero,
      canFua,
      canMultiConn: p.canMultiConn ? await p.canMultiConn(h) : false,
      canExtents: p.canExtents ? await p.canExtents(h) : !!p.extents,
      canCache: p.canCache ? await p.canCache(h) : p.cache ? "native" : "none",
      blockSize: p.blockSize ? await p.blockSize(h) : null,
      exportDescription: p.exportDescription ? await p.exportDescription(h) : null,
    };
    return this.caps;
  }

  private c(): Caps {
    if (!this.caps) throw new Error("context used before it was prepared");
    return this.caps;
  }

  async getSize() { return (await this.loadCaps()).size; }
  async canWrite() { return (await this.loadCaps()).canWrite; }
  async canFlush() { return (await this.loadCaps()).canFlush; }
  async isRotational() { return (await this.loadCaps()).isRotational; }
  async canTrim() { return (await this.loadCaps()).canTrim; }
  async canZero() { return (await this.loadCaps()).canZero; }
  async canFastZero() { return (await this.loadCaps()).canFastZero; }
  async canFua() { return (await this.loadCaps()).canFua; }
  async canMultiConn() { return (await this.loadCaps()).canMultiConn; }
  async canExtents() { return (await this.loadCaps()).canExtents; }
  async canCache() { return (await this.loadCaps()).canCache; }
  async blockSize() { return (await this.loadCaps()).blockSize; }
  async exportDescription() { return (await this.loadCaps()).exportDescription; }

  async pread(buf: Buffer, offset: number, flags: number): Promise<void> {
    await this.plugin.pread(this.handle, buf, offset, flags);
  }

  async preadSparse(buf: Buffer, offset: number, flags: number): Promise<ReadPiece[]> {
    if (!this.plugin.preadSparse) {
      await this.plugin.pread(this.handle, buf, offset, flags);
      return [{ length: buf.length, hole: false }];
    }
    return checkPieces(this.plugin.name, await this.plugin.preadSparse(this.handle, buf, offset, flags), buf.length);
  }

  async pwrite(buf: Buffer, offset: number, flags: number): Promise<void> {
    const c = this.c();
    if (!c.canWrite || !this.plugin.pwrite) throw new NbdError(NBD_EPERM, "write on a read-only export");
    if (flags & FLAG_FUA && c.canFua === "emulate") {
      await this.plugin.pwrite(this.handle, buf, offset, flags & ~FLAG_FUA);
      await this.flush(0);
      return;
    }
    await this.plugin.pwrite(this.handle, buf, offset, flags);
  }

  async flush(flags: number): Promise<void> {
    if (this.plugin.flush) await this.plugin.flush(this.handle, flags);
  }

  async trim(count: number, offset: number, flags: number): Promise<void> {
    const c = this.c();
    if (!c.canTrim || !this.plugin.trim) throw new NbdError(NBD_EPERM, "trim is not supported by this export");
    await this.emulateFua(flags, (f) => this.plugin.trim!(this.handle, count, offset, f));
  }

  async zero(count: number, offset: number, flags: number): Promise<void> {
    const c = this.c();
    if (!c.canZero) throw new NbdError(NBD_EPERM, "write zeroes on a read-only export");
    if (flags & FLAG_FAST_ZERO && !c.canFastZero) throw new NbdError(NBD_ENOTSUP, "fast zero is not supported");
    if (this.plugin.zero) {
      try {
        await this.emulateFua(flags, (f) => this.plugin.zero!(this.handle, count, offset, f));
        return;
      } catch (err) {
        // "not supported" from the plugin means: fall back to writing zeroes.
        if (!(err instanceof NbdError && err.errno === NBD_ENOTSUP) || flags & FLAG_FAST_ZERO) throw err;
      }
    } else if (flags & FLAG_FAST_ZERO) {
      throw new NbdError(NBD_ENOTSUP, "fast zero is not supported");
    }
    const wflags = flags & FLAG_FUA;
    while (count > 0) {
      const n = Math.min(count, ZERO_CHUNK);
      await this.pwrite(zeros(n), offset, count === n ? wflags : 0);
      offset += n;
      count -= n;
    }
  }

  async extents(count: number, offset: number, flags: number): Promise<Extent[]> {
    const c = this.c();
    if (!c.canExtents || !this.plugin.extents) return [{ length: count, type: 0 }];
    const ext = await this.plugin.extents(this.handle, count, offset, flags);
    if (!Array.isArray(ext) || ext.length === 0) throw new Error(`${this.plugin.name}: extents returned no extent`);
    return ext;
  }

  async cache(count: number, offset: number, flags: number): Promise<void> {
    const c = this.c();
    if (c.canCache === "native" && this.plugin.cache) {
      await this.plugin.cache(this.handle, count, offset, flags);
    } else if (c.canCache === "emulate") {
      // Reading is the emulation: it pulls the data into whatever caches exist.
      const scratch = Buffer.allocUnsafe(Math.min(count, ZERO_CHUNK));
      while (count > 0) {
        const n = Math.min(count, scratch.length);
        await this.plugin.pread(this.handle, scratch.subarray(0, n), offset, 0);
        offset += n;
        count -= n;
      }
    } else {
      throw new NbdError(NBD_EINVAL, "cache is not supported by this export");
    }
  }

  private async emulateFua(flags: number, call: (f: number) => unknown): Promise<void> {
    if (flags & FLAG_FUA && this.c().canFua === "emulate") {
      await call(flags & ~FLAG_FUA);
      await this.flush(0);
    } else {
      await call(flags);
    }
  }
}


/** Pieces must cover the read exactly, in order: a plugin bug is an EIO, not a short reply. */
export function checkPieces(who: string, pieces: ReadPiece[], length: number): ReadPiece[] {
  let total = 0;
  for (const p of pieces) {
    if (!(p.length > 0) || !Number.isSafeInteger(p.length)) throw new Error(`${who}: preadSparse returned a piece of length ${p.length}`);
    total += p.length;
  }
  if (total !== length) throw new Error(`${who}: preadSparse pieces cover ${total} bytes of a ${length}-byte read`);
  return pieces;
}
