// One mounted ext2/3/4 filesystem, shared by every connection that reads
// or writes a file in it.
//
// Concurrency: libext2fs (the npm ext2fs package) runs one call at a time
// (its own global queue), and one libext2fs file handle is kept per inode
// and shared by all connections, so no connection sees another's stale
// block buffer. On top of that, writes to one file are serialized (a
// per-inode lock), and everything runs through a gate that a remount
// closes: in-flight requests finish first, later ones wait.
//
// Durability: file data reach the layer below at each write (libext2fs
// flushes the file after every write). A write that allocated blocks (a
// hole filled) leaves bitmaps and counters in libext2fs's memory; flush
// then unmounts (ext2fs_close writes them back) and mounts again. Without
// such writes, flush only flushes the layer below.

import ext2fs from "ext2fs";
import binding from "ext2fs/lib/binding.js";
import { MAX_EXPORTS } from "../../backend/layer.js";
import { NbdError, type Context } from "../../backend/types.js";
import { MAX_STRING, NBD_EINVAL, NBD_EIO } from "../../protocol/constants.js";
import { ContextDisk } from "./disk.js";
import { ext2Message } from "./errors.js";

const O_RDONLY = 0;
const O_RDWR = 2;
const O_NOFOLLOW = 0o400000;
/** Reads do not update atime (libext2fs would write the inode at every read). */
const O_NOATIME = 0o1000000;
/** Largest single libext2fs read or write (it copies through the WebAssembly heap). */
const IO_CHUNK = 1 << 20;
/** Directories visited at most by a listing walk. */
const MAX_DIRS = 10000;

/** A file some connections have open: found by path, shared by inode. */
export interface FileRef {
  path: string;
  ino: number;
  size: number;
}

interface OpenFile {
  fd: number;
  refs: number;
  /** i_blocks when last checked: a change means a write allocated blocks. */
  blocks: number;
}

export class Volume {
  private fs: ext2fs.Fs;
  private files = new Map<number, Promise<OpenFile>>();
  private refs = new Map<number, number>();
  private writeLocks = new Map<number, Promise<void>>();
  private active = 0;
  private gateClosed: Promise<void> | null = null;
  private drained: (() => void) | null = null;
  private dirtyMeta = false;
  private broken: Error | null = null;

  private constructor(
    fs: ext2fs.Fs,
    readonly disk: ContextDisk,
    readonly readonly: boolean,
  ) {
    this.fs = fs;
  }

  /** Mount the filesystem in `ctx` (read-only: nothing is ever written below). */
  static async mount(ctx: Context, readonly: boolean, what: string): Promise<Volume> {
    const canFlush = !readonly && (await ctx.canFlush());
    const disk = new ContextDisk(ctx, await ctx.getSize(), readonly, canFlush);
    try {
      return new Volume(await ext2fs.mount(disk, 0), disk, readonly);
    } catch (err) {
      throw new NbdError(NBD_EINVAL, `ext2: cannot open the filesystem in ${what}: ${ext2Message(err)}`);
    }
  }

  private get p(): ext2fs.Promises {
    return this.fs.promises;
  }

  /** Run `fn` while the filesystem is mounted (waits out a remount). */
  private async inGate<T>(fn: () => Promise<T>): Promise<T> {
    while (this.gateClosed) await this.gateClosed;
    if (this.broken) throw new NbdError(NBD_EIO, `ext2: ${this.broken.message}`);
    this.active++;
    try {
      return await fn();
    } finally {
      if (--this.active === 0 && this.drained) this.drained();
    }
  }

  /** Run `fn` alone: no request in flight, none starts until it ends. */
  private async alone<T>(fn: () => Promise<T>): Promise<T> {
    while (this.gateClosed) await this.gateClosed;
    let open!: () => void;
    this.gateClosed = new Promise((r) => (open = r));
    try {
      if (this.active > 0) await new Promise<void>((r) => (this.drained = r));
      this.drained = null;
      return await fn();
    } finally {
      this.gateClosed = null;
      open();
    }
  }

  /** Every regular file (symbolic links are not followed), by absolute path, with its size. */
  walk(): Promise<Map<string, number>> {
    return this.inGate(async () => {
      const out = new Map<string, number>();
      const seenDirs = new Set<number>();
      const dirs: string[] = ["/"];
      while (dirs.length > 0 && out.size < MAX_EXPORTS && seenDirs.size < MAX_DIRS) {
        const dir = dirs.shift()!;
        let names: string[];
        try {
          names = await this.p.readdir(dir);
        } catch {
          continue; // an unreadable directory is left out
        }
        for (const name of names.sort()) {
          // Untrusted names: no '/', NUL, or bytes that are not UTF-8 (U+FFFD).
          if (name === "" || name === "." || name === ".." || /[\/\0\ufffd]/.test(name)) continue;
          const path = dir === "/" ? `/${name}` : `${dir}/${name}`;
          if (Buffer.byteLength(path) > MAX_STRING) continue;
          let st: ext2fs.Stats;
          try {
            st = await this.p.lstat(path);
          } catch {
            continue;
          }
          if (st.isDirectory()) {
            if (!seenDirs.has(st.ino)) dirs.push(path);
            seenDirs.add(st.ino);
          } else if (st.isFile() && out.size < MAX_EXPORTS) out.set(path, st.size);
        }
      }
      return out;
    });
  }

  /** Open `path` for a connection (follow: symbolic links are followed, inside the filesystem). */
  open(path: string, follow: boolean): Promise<FileRef> {
    return this.inGate(async () => {
      let fd: number;
      try {
        fd = (await this.p.open(path, this.flags() | (follow ? 0 : O_NOFOLLOW))).fd;
      } catch (err) {
        throw new NbdError(NBD_EINVAL, `ext2: ${path.slice(0, 256)}: ${(err as { code?: string }).code === "ENOENT" ? "no such file" : ext2Message(err)}`);
      }
      const st = await this.p.fstat(fd);
      if (!st.isFile()) {
        await this.p.close(fd);
        throw new NbdError(NBD_EINVAL, `ext2: ${path.slice(0, 256)}: not a regular file`);
      }
      if (this.files.has(st.ino)) await this.p.close(fd);
      else this.files.set(st.ino, Promise.resolve({ fd, refs: 0, blocks: st.blocks }));
      this.refs.set(st.ino, (this.refs.get(st.ino) ?? 0) + 1);
      return { path, ino: st.ino, size: st.size };
    });
  }

  /** A connection is done with `f`: the last one closes the libext2fs file. */
  async release(f: FileRef): Promise<void> {
    const n = (this.refs.get(f.ino) ?? 1) - 1;
    if (n > 0) return void this.refs.set(f.ino, n);
    this.refs.delete(f.ino);
    const of = this.files.get(f.ino);
    this.files.delete(f.ino);
    if (of) await this.inGate(async () => this.p.close((await of).fd)).catch(() => {});
  }

  private flags(): number {
    return (this.readonly ? O_RDONLY : O_RDWR) | O_NOATIME;
  }

  /** The shared libext2fs file of `f` (opened again by path after a remount). */
  private file(f: FileRef): Promise<OpenFile> {
    let of = this.files.get(f.ino);
    if (!of) {
      of = (async () => {
        const fd = (await this.p.open(f.path, this.flags())).fd;
        const st = await this.p.fstat(fd);
        if (st.ino !== f.ino) throw new Error(`${f.path} is no longer the same file`);
        return { fd, refs: 0, blocks: st.blocks };
      })();
      this.files.set(f.ino, of);
      of.catch(() => this.files.get(f.ino) === of && this.files.delete(f.ino));
    }
    return of;
  }

  async read(f: FileRef, buf: Buffer, off: number): Promise<void> {
    await this.inGate(async () => {
      const { fd } = await this.file(f);
      for (let done = 0; done < buf.length; ) {
        const n = Math.min(IO_CHUNK, buf.length - done);
        const { bytesRead } = await this.p.read(fd, buf, done, n, off + done);
        if (bytesRead <= 0) {
          buf.fill(0, done); // past the end of the file (cannot happen within its size)
          return;
        }
        done += bytesRead;
      }
    });
  }

  /** Write `buf` at `off`, serialized with other writes to the same file. */
  async write(f: FileRef, buf: Buffer, off: number): Promise<void> {
    if (this.readonly) throw new NbdError(NBD_EINVAL, "ext2: the filesystem is open read-only");
    await this.inGate(() => this.serialized(f.ino, async () => {
      const of = await this.file(f);
      for (let done = 0; done < buf.length; ) {
        const n = Math.min(IO_CHUNK, buf.length - done);
        const { bytesWritten } = await this.p.write(of.fd, buf.subarray(done, done + n), 0, n, off + done);
        if (bytesWritten <= 0) throw new NbdError(NBD_EIO, `ext2: short write to ${f.path.slice(0, 256)}`);
        done += bytesWritten;
      }
      const blocks = await binding.stat_i_blocks(of.fd);
      if (blocks !== of.blocks) {
        of.blocks = blocks;
        this.dirtyMeta = true;
      }
    }));
  }

  private async serialized<T>(ino: number, fn: () => Promise<T>): Promise<T> {
    const prev = this.writeLocks.get(ino) ?? Promise.resolve();
    let done!: () => void;
    const mine = prev.then(() => new Promise<void>((r) => (done = r)));
    this.writeLocks.set(ino, mine);
    await prev;
    try {
      return await fn();
    } finally {
      done();
      if (this.writeLocks.get(ino) === mine) this.writeLocks.delete(ino);
    }
  }

  /** Make every write so far durable in the layer below. */
  async flush(): Promise<void> {
    if (this.readonly) return;
    if (!this.dirtyMeta) return this.inGate(() => this.disk.flush());
    await this.alone(async () => {
      if (!this.dirtyMeta) return this.disk.flush();
      this.dirtyMeta = false;
      this.files.clear(); // umount closes every file; they open again by path
      try {
        await ext2fs.umount(this.fs); // writes bitmaps, counters, superblock; flushes
        this.fs = await ext2fs.mount(this.disk, 0);
      } catch (err) {
        this.broken = new Error(`the filesystem could not be remounted after a flush: ${ext2Message(err)}`);
        throw new NbdError(NBD_EIO, `ext2: ${this.broken.message}`);
      }
    });
  }

  /** Unmount (the filter's cleanup): waits for requests in flight. */
  async unmount(): Promise<void> {
    await this.alone(async () => {
      if (this.broken) return;
      this.broken = new Error("the filesystem is unmounted");
      this.files.clear();
      await ext2fs.umount(this.fs);
    });
  }
}
