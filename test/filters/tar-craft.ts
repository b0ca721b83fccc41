// Hand-made tar archives for the hostile-input tests: headers with any
// name bytes, pax records, GNU long names, bad checksums and sizes.

const BLOCK = 512;

export interface HeaderOptions {
  type?: string;
  /** POSIX ustar prefix field (joined as prefix/name). */
  prefix?: Buffer | string;
  /** Raw size field text (default: octal of the size). */
  sizeField?: Buffer;
  /** Corrupt the checksum. */
  badChecksum?: boolean;
}

export function header(name: Buffer | string, size: number, o: HeaderOptions = {}): Buffer {
  const h = Buffer.alloc(BLOCK);
  Buffer.from(name).copy(h, 0, 0, 100);
  h.write("0000644\0", 100, "latin1");
  h.write("0000000\0", 108, "latin1");
  h.write("0000000\0", 116, "latin1");
  if (o.sizeField) o.sizeField.copy(h, 124, 0, 12);
  else h.write(size.toString(8).padStart(11, "0") + "\0", 124, "latin1");
  h.write("14000000000\0", 136, "latin1");
  h[156] = (o.type ?? "0").charCodeAt(0);
  h.write("ustar\0" + "00", 257, "latin1");
  if (o.prefix) Buffer.from(o.prefix).copy(h, 345, 0, 155);
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const c of h) sum += c;
  if (o.badChecksum) sum += 1;
  h.write(sum.toString(8).padStart(6, "0") + "\0 ", 148, "latin1");
  return h;
}

function pad(data: Buffer): Buffer {
  const n = Math.ceil(data.length / BLOCK) * BLOCK;
  return Buffer.concat([data, Buffer.alloc(n - data.length)]);
}

/** A member: header and padded data. */
export function member(name: Buffer | string, data: Buffer | string, o: HeaderOptions = {}): Buffer {
  const d = Buffer.from(data);
  return Buffer.concat([header(name, d.length, o), pad(d)]);
}

/** A pax extended header ('x', or 'g' for global) with these records. */
export function pax(records: Record<string, Buffer | string>, type = "x"): Buffer {
  const recs: Buffer[] = [];
  for (const [k, v] of Object.entries(records)) {
    const body = Buffer.concat([Buffer.from(` ${k}=`), Buffer.from(v), Buffer.from("\n")]);
    let len = body.length + 1;
    while (String(len).length + body.length !== len) len = String(len).length + body.length;
    recs.push(Buffer.concat([Buffer.from(String(len)), body]));
  }
  return member("././@PaxHeader", Buffer.concat(recs), { type });
}

/** A GNU long name ('L') header for the next member. */
export function longName(name: Buffer | string): Buffer {
  return member("././@LongLink", Buffer.concat([Buffer.from(name), Buffer.alloc(1)]), { type: "L" });
}

/** The archive: the parts, then the two zero blocks that end it. */
export function archive(...parts: Buffer[]): Buffer {
  return Buffer.concat([...parts, Buffer.alloc(2 * BLOCK)]);
}
