// ext2 filter: serve a file inside an ext2, ext3 or ext4 filesystem (the
// layer below) as a disk, reading and writing it in place through
// libext2fs (the npm ext2fs package, WebAssembly). ext2file=/PATH serves
// PATH; ext2file=exportname makes every regular file an export named by
// its absolute path (OUTER:/PATH when the layer below lists several
// exports); a name without the leading slash names the same file, as in
// nbdkit (nbd://host/disks/disk.raw asks for "disks/disk.raw").
//
// One mounted filesystem (./volume.ts) per export below serves every
// connection; it sits on a shared context of the layer below held by the
// inner-exports helper, through a small block cache (./disk.ts).

import { FLAG_FUA, NbdError, type Context, type Extent, type Filter, type LowerBackend } from "../../backend/types.js";
import { NBD_EINVAL } from "../../protocol/constants.js";
import { InnerExports, type InnerSource } from "../kit/inner-exports.js";
import { Volume, type FileRef } from "./volume.js";

interface Ext2Index {
  volume: Volume;
  /** Regular files by path (exportname mode only). */
  files: Map<string, number> | null;
}

interface Ext2Handle {
  volume: Volume;
  file: FileRef;
  description: string | null;
}

/**
 * A client's export name as a path: nbdkit takes "disks/disk.raw" (from
 * nbd://host/disks/disk.raw, whose export name has no leading slash) as
 * "/disks/disk.raw", and so does this filter.
 */
function asPath(exportName: string): string {
  return exportName.startsWith("/") ? exportName : `/${exportName}`;
}

/** Zeroes are written in pieces of this size. */
const ZERO_CHUNK = 1 << 20;

export default function createFilter(): Filter<Ext2Handle> {
  let file: string | undefined;
  let lowerSeen: LowerBackend | null = null;
  const exportnameMode = () => file === "exportname";

  const source: InnerSource<Ext2Index> = {
    name: "ext2",
    async scan(ctx, outer, prev) {
      const volume = prev?.volume ?? (await Volume.mount(ctx, ctx.readonly, outer === "" ? "the export below" : `export '${outer.slice(0, 256)}'`));
      if (!exportnameMode()) return { volume, files: null };
      try {
        return { volume, files: await volume.walk() };
      } catch (err) {
        if (!prev) await volume.unmount().catch(() => {});
        throw err;
      }
    },
    items(idx) {
      return [...(idx.files ?? [])].map(([name, size]) => ({ name, description: `${size} bytes` }));
    },
    has(idx, inner) {
      return idx.files?.has(asPath(inner)) ?? false;
    },
    async dispose(idx) {
      await idx.volume.unmount();
    },
  };
  const inner = new InnerExports(source);

  return {
    name: "ext2",
    version: "1.0.0",
    longname: "nbdstate ext2 filter",
    description: "Read and write files inside ext2, ext3 or ext4 filesystems.",
    configHelp:
      "ext2file=<PATH>        The absolute path of the file inside the filesystem to serve.\n" +
      "ext2file=exportname    Serve every regular file as an export named by its path.",

    config(next, key, value) {
      if (key !== "ext2file") return next(key, value);
      if (value !== "exportname" && !value.startsWith("/")) {
        throw new Error(`ext2: ext2file must be an absolute path (starting with '/') or exportname, not '${value}'`);
      }
      file = value;
    },

    configComplete(next) {
      if (file === undefined) throw new Error("ext2: ext2file parameter is required");
      return next();
    },

    afterFork(lower) {
      lowerSeen = lower;
    },

    async cleanup() {
      await inner.close(lowerSeen);
    },

    listExports(lower, p) {
      return exportnameMode() ? inner.list(lower, p) : lower.listExports(p);
    },

    defaultExport(lower, p) {
      return exportnameMode() ? null : lower.defaultExport(p);
    },

    async open(a) {
      const p = { readonly: a.readonly, tls: a.tls };
      let outer: string;
      let path: string;
      let idx: Ext2Index;
      if (exportnameMode()) {
        if (a.exportName === "") throw new NbdError(NBD_EINVAL, "ext2: ext2file=exportname: the client must name a file");
        const r = await inner.resolve(a.lower, p, a.exportName);
        path = asPath(r.inner);
        if (!r.index.files?.has(path)) {
          throw new NbdError(NBD_EINVAL, `ext2: export '${a.exportName.slice(0, 256)}': no regular file '${path.slice(0, 256)}' in the filesystem`);
        }
        ({ outer, index: idx } = r);
      } else {
        outer = await inner.canonical(a.lower, p, a.exportName);
        path = file!;
        idx = await inner.index(a.lower, outer, p);
      }
      // Every connection to this filesystem uses the helper's shared context below.
      a.use(await inner.context(a.lower, outer, p));
      const f = await idx.volume.open(path, !exportnameMode());
      return { volume: idx.volume, file: f, description: exportnameMode() ? `${f.size} bytes` : null };
    },

    async close(h) {
      await h.volume.release(h.file);
    },

    getSize(_next, h) {
      return h.file.size;
    },
    async canWrite(next, h) {
      return !h.volume.readonly && (await next.canWrite());
    },
    canFlush() {
      return true;
    },
    canTrim() {
      return false;
    },
    canZero() {
      return true;
    },
    canFastZero() {
      return false;
    },
    canFua() {
      return "native" as const;
    },
    // One filesystem handle serves every connection: what one writes, all
    // read at once, and a flush from any of them flushes it.
    canMultiConn() {
      return true;
    },
    canExtents() {
      return true;
    },
    canCache() {
      return "none" as const;
    },
    blockSize() {
      return null;
    },
    async exportDescription(next: Context, h) {
      return h.description ?? next.exportDescription();
    },

    pread(_next, h, buf, off) {
      check(h, off, buf.length);
      return h.volume.read(h.file, buf, off);
    },
    async pwrite(_next, h, buf, off, flags) {
      check(h, off, buf.length);
      await h.volume.write(h.file, buf, off);
      if (flags & FLAG_FUA) await h.volume.flush();
    },
    async zero(_next, h, count, off, flags) {
      check(h, off, count);
      const z = Buffer.alloc(Math.min(count, ZERO_CHUNK));
      for (let done = 0; done < count; done += z.length) {
        const n = Math.min(z.length, count - done);
        await h.volume.write(h.file, n === z.length ? z : z.subarray(0, n), off + done);
      }
      if (flags & FLAG_FUA) await h.volume.flush();
    },
    async trim() {
      // Not advertised (canTrim is false): trimming is advisory, nothing to do.
    },
    flush(_next, h) {
      return h.volume.flush();
    },
    async cache() {},
    // libext2fs does not tell where a file's holes are: the served file is
    // reported as data (never the extents of the filesystem image).
    extents(_next, h, count, off): Extent[] {
      check(h, off, Math.min(count, h.file.size - off));
      return [{ length: Math.max(1, Math.min(count, h.file.size - off)), type: 0 }];
    },
  };
}

function check(h: Ext2Handle, off: number, count: number): void {
  if (off < 0 || count < 0 || off > h.file.size || count > h.file.size - off) {
    throw new NbdError(NBD_EINVAL, `ext2: request [${off}, +${count}) beyond the end of ${h.file.path.slice(0, 256)} (${h.file.size})`);
  }
}
