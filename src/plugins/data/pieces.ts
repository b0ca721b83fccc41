// Values of data expressions while they are evaluated: literal bytes, a
// run of one byte, or a sparse image. Small results stay plain buffers so
// that repeats of short patterns are one Buffer.fill, not N writes.

import { Image } from "./image.js";
import { DataFormatError, MAX_OFFSET } from "./parse.js";

export type Piece =
  | { k: "bytes"; b: Buffer }
  | { k: "fill"; byte: number; n: number }
  | { k: "image"; img: Image };

/** Images up to this size are flattened to bytes before being repeated. */
const SMALL = 1 << 20;

export const EMPTY: Piece = { k: "bytes", b: Buffer.alloc(0) };

export function pieceLength(p: Piece): number {
  return p.k === "bytes" ? p.b.length : p.k === "fill" ? p.n : p.img.size;
}

/** Write p into img at offset. */
export function place(img: Image, p: Piece, offset: number): void {
  if (p.k === "bytes") img.write(p.b, offset);
  else if (p.k === "fill") img.fill(p.byte, p.n, offset);
  else img.blit(p.img, 0, p.img.size, offset);
}

/**
 * Where a list is evaluated: a plain buffer while everything stays within
 * SMALL bytes (most nested lists: no page map, no slab per list), a
 * sparse image once something lands beyond.
 */
export class Canvas {
  private flat: Buffer | null = Buffer.alloc(64);
  private img: Image | null = null;
  /** The largest offset reached. */
  size = 0;

  place(p: Piece, offset: number): void {
    const end = offset + pieceLength(p);
    if (this.flat && end > SMALL) this.toImage();
    if (this.img) place(this.img, p, offset);
    else {
      const flat = this.room(end);
      if (p.k === "bytes") p.b.copy(flat, offset);
      else if (p.k === "fill") flat.fill(p.byte, offset, end);
      else p.img.read(flat.subarray(offset, end), 0);
    }
    this.grow(end);
  }

  /** Record that the offset reached `end` (an @ move past the data). */
  grow(end: number): void {
    if (end > this.size) this.size = end;
    if (this.flat && this.size > SMALL) this.toImage();
  }

  /** The result as the simplest piece. */
  result(): Piece {
    if (this.img) {
      this.img.size = this.size;
      return fromImage(this.img);
    }
    return { k: "bytes", b: this.room(this.size).subarray(0, this.size) };
  }

  /** The result as an image (the whole disk). */
  toImage(): Image {
    if (!this.img) {
      this.img = new Image();
      const used = Math.min(this.size, this.flat!.length);
      if (used > 0) this.img.write(this.flat!.subarray(0, used), 0);
      this.flat = null;
    }
    this.img.size = this.size;
    return this.img;
  }

  private room(end: number): Buffer {
    let flat = this.flat!;
    if (end > flat.length) {
      let cap = flat.length;
      while (cap < end) cap *= 2;
      const bigger = Buffer.alloc(Math.min(cap, Math.max(end, SMALL)));
      flat.copy(bigger);
      this.flat = flat = bigger;
    }
    return flat;
  }
}

/** An image as the simplest piece that holds it. */
export function fromImage(img: Image): Piece {
  if (img.arr.allocatedPages === 0) return { k: "fill", byte: 0, n: img.size };
  if (img.size <= SMALL) {
    const b = Buffer.alloc(img.size);
    img.read(b, 0);
    return { k: "bytes", b };
  }
  return { k: "image", img };
}

/** p repeated n times. */
export function repeat(p: Piece, n: number): Piece {
  const len = pieceLength(p);
  if (len === 0 || n === 0) return EMPTY;
  if (n === 1) return p;
  if (len > MAX_OFFSET / n) throw new DataFormatError(`repeating ${len} bytes ${n} times is too large`);
  const total = len * n;
  if (p.k === "fill") return { k: "fill", byte: p.byte, n: total };
  if (p.k === "image") {
    const img = new Image();
    for (let i = 0; i < n; i++) img.blit(p.img, 0, len, i * len);
    img.size = total;
    return { k: "image", img };
  }
  const b = p.b;
  if (b.every((x) => x === b[0])) return { k: "fill", byte: b[0]!, n: total };
  if (total <= SMALL) return { k: "bytes", b: Buffer.alloc(total).fill(b) };
  // A chunk of whole copies, written as often as it fits, then the rest.
  const per = Math.max(1, Math.floor(SMALL / len));
  const chunk = Buffer.alloc(per * len).fill(b);
  const img = new Image();
  let done = 0;
  while (done < n) {
    const k = Math.min(per, n - done);
    img.write(chunk.subarray(0, k * len), done * len);
    done += k;
  }
  img.size = total;
  return { k: "image", img };
}

/** Bytes [from, to) of p (to undefined: to the end), checked against its length. */
export function slice(p: Piece, from: number, to: number | undefined): Piece {
  const len = pieceLength(p);
  const end = to ?? len;
  if (from > end || end > len) {
    throw new DataFormatError(`[${from}:${to ?? ""}] does not describe a valid slice of ${len} bytes`);
  }
  if (from === 0 && end === len) return p;
  if (p.k === "bytes") return { k: "bytes", b: p.b.subarray(from, end) };
  if (p.k === "fill") return { k: "fill", byte: p.byte, n: end - from };
  const img = new Image();
  img.blit(p.img, from, end - from, 0);
  img.size = end - from;
  return fromImage(img);
}
