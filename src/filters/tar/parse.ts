// Reading a tar archive's headers through a context of the layer below:
// ustar and v7 headers, GNU long names (L) and long link names (K), pax
// extended headers (x: path, size; g: global), GNU sparse members (S, or
// pax GNU.sparse.*) recorded so they can be refused with a clear error.
//
// Names are untrusted. A member is served only if its name is valid
// UTF-8, not empty, at most 4096 bytes, without NUL, not absolute and
// without a ".." component; other members are skipped (never listed, never
// opened) and remembered with the reason, for the error message.

import type { Context } from "../../backend/types.js";
import { MAX_STRING } from "../../protocol/constants.js";

const BLOCK = 512;
/** How much is read ahead at once while walking the headers. */
const READ_WINDOW = 64 * 1024;
/** A pax header larger than this is refused (a hostile archive could claim gigabytes). */
const MAX_PAX = 1 << 20;
/** At most this many skipped names are remembered (for error messages). */
const MAX_REFUSED = 1000;

export interface Member {
  /** The member's path, as `tar tf` prints it. */
  name: string;
  /** Offset of the member's data in the archive. */
  dataOffset: number;
  /** Size of the data. */
  size: number;
  /** A GNU sparse member: refused. */
  sparse: boolean;
}

export interface TarIndex {
  /** Regular files by name (when a name occurs twice, the last one wins, as `tar x` would leave it). */
  members: Map<string, Member>;
  /** Names of members that are never served, with the reason. */
  refused: Map<string, string>;
  /** Headers read. */
  headers: number;
  /** True if the scan stopped at the header limit (tar-limit) before the end. */
  limited: boolean;
}

/** A corrupt archive: the message says where. */
export class TarError extends Error {}

class Reader {
  private buf = Buffer.alloc(0);
  private start = 0;
  constructor(
    private readonly ctx: Context,
    readonly size: number,
  ) {}

  /** `len` bytes at `off` (a view valid until the next read). */
  async read(off: number, len: number): Promise<Buffer> {
    if (off + len > this.size) throw new TarError(`truncated archive: ${len} bytes at offset ${off} run past the end (${this.size})`);
    if (off >= this.start && off + len <= this.start + this.buf.length) {
      return this.buf.subarray(off - this.start, off - this.start + len);
    }
    const n = Math.min(Math.max(len, READ_WINDOW), this.size - off);
    const b = Buffer.alloc(n);
    await this.ctx.pread(b, off, 0);
    this.buf = b;
    this.start = off;
    return b.subarray(0, len);
  }
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Bytes up to the first NUL. */
function cstr(b: Buffer): Buffer {
  const z = b.indexOf(0);
  return z < 0 ? b : b.subarray(0, z);
}

/** A numeric header field: octal text, or GNU base-256 (high bit set). */
function numeric(b: Buffer, what: string, at: number): number {
  if (b[0]! & 0x80) {
    if (b[0] === 0xff) throw new TarError(`corrupt header at offset ${at}: negative ${what}`);
    let n = b[0]! & 0x7f;
    for (let i = 1; i < b.length; i++) {
      n = n * 256 + b[i]!;
      if (n > Number.MAX_SAFE_INTEGER) throw new TarError(`corrupt header at offset ${at}: ${what} too large`);
    }
    return n;
  }
  const s = cstr(b).toString("latin1").trim();
  if (s === "") return 0;
  if (!/^[0-7]+$/.test(s)) throw new TarError(`corrupt header at offset ${at}: ${what} is not an octal number`);
  const n = parseInt(s, 8);
  if (!Number.isSafeInteger(n)) throw new TarError(`corrupt header at offset ${at}: ${what} too large`);
  return n;
}

function checksumOk(h: Buffer, at: number): boolean {
  const stored = numeric(h.subarray(148, 156), "checksum", at);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const c = i >= 148 && i < 156 ? 0x20 : h[i]!;
    unsigned += c;
    signed += c >= 128 ? c - 256 : c;
  }
  return stored === unsigned || stored === signed;
}

/** pax records: "LEN key=value\n" ... */
function parsePax(b: Buffer, at: number): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let i = 0;
  while (i < b.length) {
    if (b[i] === 0) break; // padding
    const sp = b.indexOf(0x20, i);
    if (sp < 0 || sp - i > 20) throw new TarError(`corrupt pax header at offset ${at}: bad record length`);
    const len = Number(b.toString("latin1", i, sp));
    if (!Number.isSafeInteger(len) || len <= sp - i + 1 || i + len > b.length || b[i + len - 1] !== 0x0a) {
      throw new TarError(`corrupt pax header at offset ${at}: bad record`);
    }
    const rec = b.subarray(sp + 1, i + len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq <= 0) throw new TarError(`corrupt pax header at offset ${at}: record without key=value`);
    out.set(rec.toString("latin1", 0, eq), Buffer.from(rec.subarray(eq + 1)));
    i += len;
  }
  return out;
}

/** Why a member name is not served, or null if it is fine. */
export function unsafeName(raw: Buffer): string | null {
  if (raw.length === 0) return "empty name";
  if (raw.length > MAX_STRING) return `name longer than ${MAX_STRING} bytes`;
  if (raw.includes(0)) return "name contains NUL";
  let s: string;
  try {
    s = utf8.decode(raw);
  } catch {
    return "name is not valid UTF-8";
  }
  if (s.startsWith("/")) return "absolute name";
  if (s.split("/").includes("..")) return "name contains '..'";
  return null;
}

function paxNumber(v: Buffer, at: number): number {
  const s = v.toString("latin1");
  if (!/^[0-9]{1,16}$/.test(s) || !Number.isSafeInteger(Number(s))) throw new TarError(`corrupt pax header at offset ${at}: bad size`);
  return Number(s);
}

/** Walk the headers of the archive in `ctx`, reading at most `limit` headers (0: no limit). */
export async function scanTar(ctx: Context, limit: number): Promise<TarIndex> {
  const r = new Reader(ctx, await ctx.getSize());
  const idx: TarIndex = { members: new Map(), refused: new Map(), headers: 0, limited: false };
  const global = new Map<string, Buffer>();
  let pax = new Map<string, Buffer>();
  let longName: Buffer | "overlong" | null = null;
  let pos = 0;
  while (pos + BLOCK <= r.size) {
    if (limit > 0 && idx.headers >= limit) {
      idx.limited = true;
      break;
    }
    const h = Buffer.from(await r.read(pos, BLOCK));
    idx.headers++;
    if (h.every((c) => c === 0)) break; // end of archive
    if (!checksumOk(h, pos)) throw new TarError(`corrupt archive: bad header checksum at offset ${pos}`);
    const type = h[156] === 0 ? "0" : String.fromCharCode(h[156]!);
    const posix = h.toString("latin1", 257, 263) === "ustar\0";
    let size = numeric(h.subarray(124, 136), "size", pos);
    let data = pos + BLOCK;
    if (type === "S" && h[482]) {
      // GNU sparse: extension blocks of the sparse map follow the header.
      for (let ext = true, n = 0; ext; n++) {
        if (n > 100000) throw new TarError(`corrupt archive: endless sparse map at offset ${pos}`);
        ext = (await r.read(data, BLOCK))[504] !== 0;
        data += BLOCK;
      }
    }
    if (data + size > r.size) throw new TarError(`truncated archive: the member at offset ${pos} runs past the end`);
    const next = data + Math.ceil(size / BLOCK) * BLOCK;

    if (type === "L") {
      const b = await r.read(data, Math.min(size, MAX_STRING + 1));
      const name = cstr(b);
      longName = name.length > MAX_STRING || (name.length === b.length && size > MAX_STRING) ? "overlong" : Buffer.from(name);
    } else if (type === "x" || type === "g") {
      if (size > MAX_PAX) throw new TarError(`corrupt archive: pax header of ${size} bytes at offset ${pos}`);
      const recs = parsePax(Buffer.from(await r.read(data, size)), pos);
      if (type === "g") for (const [k, v] of recs) global.set(k, v);
      else for (const [k, v] of recs) pax.set(k, v);
    } else if (type !== "K") {
      // A real entry: the extension headers before it apply to it.
      const get = (k: string) => pax.get(k) ?? global.get(k);
      const sparse = type === "S" || [...pax.keys()].some((k) => k.startsWith("GNU.sparse."));
      let raw: Buffer | "overlong";
      const sparseName = pax.get("GNU.sparse.name");
      if (sparseName) raw = sparseName;
      else if (get("path")) raw = get("path")!;
      else if (longName) raw = longName;
      else {
        const name = cstr(h.subarray(0, 100));
        const prefix = posix ? cstr(h.subarray(345, 500)) : Buffer.alloc(0);
        raw = prefix.length ? Buffer.concat([prefix, Buffer.from("/"), name]) : Buffer.from(name);
      }
      const paxSize = get("size");
      if (paxSize && type !== "S" && !sparse) {
        size = paxNumber(paxSize, pos);
        if (data + size > r.size) throw new TarError(`truncated archive: the member at offset ${pos} runs past the end`);
      }
      const regular = type === "0" || type === "7" || type === "S";
      const isDir = raw !== "overlong" && raw[raw.length - 1] === 0x2f;
      if (regular && !isDir) record(idx, raw, { dataOffset: data, size, sparse });
      pax = new Map();
      longName = null;
      pos = data + Math.ceil(size / BLOCK) * BLOCK;
      continue;
    }
    pos = next;
  }
  return idx;
}

function record(idx: TarIndex, raw: Buffer | "overlong", m: Omit<Member, "name">): void {
  const why = raw === "overlong" ? `name longer than ${MAX_STRING} bytes` : unsafeName(raw);
  if (why !== null) {
    if (raw !== "overlong" && idx.refused.size < MAX_REFUSED) {
      idx.refused.set(raw.subarray(0, MAX_STRING).toString("utf8"), why);
    }
    return;
  }
  const name = (raw as Buffer).toString("utf8");
  idx.members.delete(name); // re-insert: the listing order is the order of the last occurrence
  idx.members.set(name, { name, ...m });
}
