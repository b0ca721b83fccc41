// Exports found inside the data of the layer below: the shared logic of
// the filters that see inside their data (tar members, ext2 files,
// partitions).
//
// A "container" is one export of the layer below; an "item" is something
// inside it (a member, a file, a partition). In exportname mode a filter
// lists items as exports:
//
//   - when the layer below offers only its default export, each item is an
//     export named INNER (e.g. "dir/f2", "/etc/hosts", "1");
//   - when it lists several exports (file dir=DIR, or another filter in
//     exportname mode), every export OUTER contributes OUTER:INNER for each
//     item inside it (e.g. "a.tar:dir/f2", "1:/etc/hosts").
//
// Containers are read through shared contexts of the layer below, opened
// lazily (the first listing or client that needs one) and at most
// MAX_CONTAINERS of them; they are held until the filter's cleanup. The
// index of a container (what the filter found inside it) is cached and
// read again once older than ttlMs, or when a client asks for an item the
// cached index does not have (at most once a second per container).

import { MAX_EXPORTS } from "../../backend/layer.js";
import { NbdError, type Context, type ExportEntry, type ListParams, type LowerBackend } from "../../backend/types.js";
import { NBD_EINVAL } from "../../protocol/constants.js";
import { clipNbdString, isNbdString } from "../../protocol/strings.js";

export interface InnerItem {
  name: string;
  description?: string;
}

/** What a filter supplies: how to read a container and what is inside. */
export interface InnerSource<I> {
  /** The filter's name, for messages. */
  readonly name: string;
  /**
   * Read the index of one container through `ctx` (a shared context of the
   * layer below, valid until the helper closes). `prev` is the previous
   * index of the same container, if any (e.g. to keep a mounted filesystem).
   */
  scan(ctx: Context, outer: string, prev: I | undefined): Promise<I>;
  /** The items that are listed as exports, in order. */
  items(index: I): InnerItem[];
  /** Whether `inner` names an item of `index` (used to split OUTER:INNER). */
  has(index: I, inner: string): boolean;
  /** Release what an index holds, when the helper closes. */
  dispose?(index: I): Promise<void>;
}

export interface InnerOptions {
  /** Re-read a container's index once it is older than this (default 5 s). */
  ttlMs?: number;
  /** At most this many containers open at once (default MAX_CONTAINERS). */
  maxContainers?: number;
}

/** Containers read at most (each holds a shared context below). */
export const MAX_CONTAINERS = 1024;
/** A miss rescans a container at most this often. */
const MISS_RESCAN_MS = 1000;

interface Entry<I> {
  ctx: Context;
  index?: I;
  scannedAt: number;
  scanning?: Promise<I>;
}

/** The containers below: one (the default export) or every listed export. */
export interface Containers {
  simple: boolean;
  names: string[];
}

/** A client's export name, split into the container and the item inside. */
export interface Resolved<I> {
  outer: string;
  inner: string;
  index: I;
}

/** A warning on stderr (filters have no logger of their own). */
export function warn(filter: string, msg: string): void {
  process.stderr.write(`nbdstate: ${filter}: warning: ${msg}\n`);
}

export class InnerExports<I> {
  private entries = new Map<string, Promise<Entry<I>>>();
  private lowerList = new Map<string, { at: number; c: Containers }>();
  private readonly ttl: number;
  private readonly max: number;
  private closed = false;

  constructor(
    private readonly src: InnerSource<I>,
    opts: InnerOptions = {},
  ) {
    this.ttl = opts.ttlMs ?? 5000;
    this.max = opts.maxContainers ?? MAX_CONTAINERS;
  }

  /** Which containers the layer below offers (cached for ttlMs). */
  async containers(lower: LowerBackend, p: ListParams): Promise<Containers> {
    const key = `${p.readonly ? 1 : 0}${p.tls ? 1 : 0}`;
    const hit = this.lowerList.get(key);
    if (hit && Date.now() - hit.at < Math.min(this.ttl, 2000)) return hit.c;
    const list = await lower.listExports(p);
    const def = await lower.defaultExport(p);
    let c: Containers;
    if (list.length === 0) c = { simple: true, names: def === null ? [] : [def] };
    else if (list.length === 1 && (list[0]!.name === def || (def === null && list[0]!.name === ""))) {
      c = { simple: true, names: [list[0]!.name] };
    } else c = { simple: false, names: list.map((e) => e.name) };
    this.lowerList.set(key, { at: Date.now(), c });
    return c;
  }

  /** The canonical container for a client's export name (fixed mode): "" is the default export. */
  async canonical(lower: LowerBackend, p: ListParams, exportName: string): Promise<string> {
    if (exportName !== "") return exportName;
    return (await lower.defaultExport(p)) ?? "";
  }

  /** The shared context the helper holds for a container (opening it if needed). */
  async context(lower: LowerBackend, outer: string, p: ListParams): Promise<Context> {
    return (await this.entry(lower, outer, p)).ctx;
  }

  /** The index of a container: cached, read again when stale (or when `force`). */
  async index(lower: LowerBackend, outer: string, p: ListParams, force = false): Promise<I> {
    const e = await this.entry(lower, outer, p);
    const age = Date.now() - e.scannedAt;
    if (e.index !== undefined && !force && age < this.ttl) return e.index;
    if (e.index !== undefined && force && age < MISS_RESCAN_MS) return e.index;
    if (!e.scanning) {
      e.scanning = this.src
        .scan(e.ctx, outer, e.index)
        .then((idx) => {
          e.index = idx;
          e.scannedAt = Date.now();
          return idx;
        })
        .finally(() => {
          e.scanning = undefined;
        });
    }
    return e.scanning;
  }

  /** NBD_OPT_LIST in exportname mode: every item, named INNER or OUTER:INNER. */
  async list(lower: LowerBackend, p: ListParams): Promise<ExportEntry[]> {
    const c = await this.containers(lower, p);
    const out: ExportEntry[] = [];
    const push = (name: string, description?: string) => {
      if (!isNbdString(name)) return;
      // A listing past the bound fails whole (as the README says), never silently cut.
      if (out.length >= MAX_EXPORTS) {
        throw new NbdError(NBD_EINVAL, `${this.src.name}: more than ${MAX_EXPORTS} exports inside: the listing is refused`);
      }
      out.push(description === undefined ? { name } : { name, description: clipNbdString(description) });
    };
    if (c.simple) {
      // One container: a failure (a corrupt archive, no filesystem) is the listing's.
      if (c.names.length === 0) return out;
      for (const it of this.src.items(await this.index(lower, c.names[0]!, p))) push(it.name, it.description);
      return out;
    }
    if (c.names.length > this.max) {
      warn(this.src.name, `the layer below lists ${c.names.length} exports: only the first ${this.max} are looked into`);
    }
    const seen = new Set<string>();
    for (const outer of c.names.slice(0, this.max)) {
      let idx: I;
      try {
        idx = await this.index(lower, outer, p);
      } catch (err) {
        // Several containers: one that cannot be read is left out, the rest listed.
        warn(this.src.name, `export '${outer.slice(0, 256)}' left out of the listing: ${(err as Error).message}`);
        continue;
      }
      for (const it of this.src.items(idx)) {
        const name = `${outer}:${it.name}`;
        if (seen.has(name)) continue; // "a:b" + "c" and "a" + "b:c": the first one wins
        seen.add(name);
        push(name, it.description);
      }
    }
    return out;
  }

  /**
   * A client's export name in exportname mode: the container and the item.
   * With several containers the name is OUTER:INNER; OUTER may itself hold
   * ':' so every listed OUTER that prefixes the name is tried, longest
   * first, and the first whose index has INNER wins.
   */
  async resolve(lower: LowerBackend, p: ListParams, name: string): Promise<Resolved<I>> {
    const c = await this.containers(lower, p);
    if (c.simple) {
      if (c.names.length === 0) throw new NbdError(NBD_EINVAL, `${this.src.name}: the layer below has no export to look into`);
      const outer = c.names[0]!;
      let index = await this.index(lower, outer, p);
      if (!this.src.has(index, name)) index = await this.index(lower, outer, p, true);
      return { outer, inner: name, index };
    }
    const candidates = c.names
      .filter((o) => name.length > o.length && name.startsWith(o) && name[o.length] === ":")
      .sort((a, b) => b.length - a.length);
    if (candidates.length === 0) {
      throw new NbdError(
        NBD_EINVAL,
        `${this.src.name}: export '${name.slice(0, 256)}' not found: the layer below has several exports, ` +
          `so names are OUTER:INNER with OUTER one of them`,
      );
    }
    for (const force of [false, true]) {
      for (const outer of candidates) {
        const inner = name.slice(outer.length + 1);
        const index = await this.index(lower, outer, p, force);
        if (this.src.has(index, inner)) return { outer, inner, index };
      }
    }
    const outer = candidates[0]!;
    return { outer, inner: name.slice(outer.length + 1), index: await this.index(lower, outer, p) };
  }

  /** Release every context and index (the filter's cleanup). */
  async close(lower: LowerBackend | null): Promise<void> {
    this.closed = true;
    const all = [...this.entries.values()];
    this.entries.clear();
    this.lowerList.clear();
    for (const pe of all) {
      const e = await pe.catch(() => null);
      if (!e) continue;
      await e.scanning?.catch(() => {});
      if (e.index !== undefined && this.src.dispose) {
        await this.src.dispose(e.index).catch((err) => warn(this.src.name, `cleanup: ${(err as Error).message}`));
      }
      if (lower) await lower.close(e.ctx).catch(() => {});
    }
  }

  private entry(lower: LowerBackend, outer: string, p: ListParams): Promise<Entry<I>> {
    if (this.closed) return Promise.reject(new NbdError(NBD_EINVAL, `${this.src.name}: shutting down`));
    const key = `${p.readonly ? "ro" : "rw"}:${outer}`;
    let pe = this.entries.get(key);
    if (!pe) {
      if (this.entries.size >= this.max) {
        return Promise.reject(
          new NbdError(NBD_EINVAL, `${this.src.name}: too many exports below looked into (limit ${this.max})`),
        );
      }
      pe = lower
        .open({ readonly: p.readonly, exportName: outer, tls: p.tls, shared: true })
        .then((ctx) => ({ ctx, scannedAt: 0 }));
      this.entries.set(key, pe);
      // A container that could not be opened is not remembered: try again next time.
      pe.catch(() => {
        if (this.entries.get(key) === pe) this.entries.delete(key);
      });
    }
    return pe;
  }
}
