// cacheextents filter (nbdkit-cacheextents-filter): remember the answer of
// the last block status request (asked of the layer below without
// REQ_ONE, for as much as it will tell) and answer later requests that
// start inside it from memory: for clients that walk the disk one extent
// at a time (qemu-img convert) over plugins where a block status request
// is slow but can describe much at once.
//
// One remembered answer per export, shared by all connections. Any write,
// zero or trim forgets it; an answer that was being fetched while one ran
// is not remembered (it may predate the write).

import { FLAG_REQ_ONE, type Context, type Extent, type Filter } from "../../backend/types.js";

interface Remembered {
  /** Absolute extents, contiguous from start. */
  list: { offset: number; length: number; type: number }[] | null;
  start: number;
  end: number;
  /** Bumped at the start and end of every write-like request. */
  gen: number;
  writers: number;
}

interface Handle {
  r: Remembered;
}

export default function createFilter(): Filter<Handle> {
  const byExport = new Map<string, Remembered>();

  async function writing(h: Handle, op: () => Promise<void>): Promise<void> {
    const r = h.r;
    r.writers++;
    r.gen++;
    r.list = null;
    try {
      await op();
    } finally {
      r.writers--;
      r.gen++;
      r.list = null;
    }
  }

  function fromMemory(r: Remembered, count: number, offset: number): Extent[] {
    const out: Extent[] = [];
    const end = offset + count;
    let pos = offset;
    for (const e of r.list!) {
      if (e.offset + e.length <= pos) continue;
      if (pos >= end) break;
      const length = Math.min(e.offset + e.length, end) - pos;
      out.push({ length, type: e.type });
      pos += length;
    }
    return out;
  }

  return {
    name: "cacheextents",
    version: "1.0.0",
    longname: "nbdstate cacheextents filter",
    description: "Remember the last block status answer of the layer below.",
    configHelp: "(no parameters of its own: they go to the plugin)",

    async open(a) {
      await a.next();
      let r = byExport.get(a.exportName);
      if (!r) byExport.set(a.exportName, (r = { list: null, start: 0, end: 0, gen: 0, writers: 0 }));
      return { r };
    },

    async extents(next: Context, h, count, offset, flags) {
      const r = h.r;
      if (r.list && offset >= r.start && offset < r.end) return fromMemory(r, count, offset);
      const gen = r.gen;
      const ext = await next.extents(count, offset, flags & ~FLAG_REQ_ONE);
      if (r.gen === gen && r.writers === 0) {
        const list: Remembered["list"] = [];
        let pos = offset;
        for (const e of ext) {
          if (!(e.length > 0)) continue;
          list.push({ offset: pos, length: e.length, type: e.type });
          pos += e.length;
        }
        if (list.length > 0) {
          r.list = list;
          r.start = offset;
          r.end = pos;
        }
      }
      return ext;
    },

    pwrite(next, h, buf, offset, flags) {
      return writing(h, () => next.pwrite(buf, offset, flags));
    },
    zero(next, h, count, offset, flags) {
      return writing(h, () => next.zero(count, offset, flags));
    },
    trim(next, h, count, offset, flags) {
      return writing(h, () => next.trim(count, offset, flags));
    },
  };
}
