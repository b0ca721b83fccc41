// The data plugin's format (nbdkit-data-plugin(1), "DATA FORMAT"): text ->
// expression tree. Evaluation is in evaluate.ts.
//
// Where nbdkit's scanner accepts garbage through sscanf quirks ("08" read
// as 0 then 8, "0x" as 0, 4294967297 wrapping to 1, "[1:2 ]" reading a
// stale length), this parser refuses it with a message. It also accepts a
// little more than nbdkit: any alignment for @^N, le32:N followed directly
// by ")" or "*", spaces around ":" and "]" in slices, and C's octal and
// \u escapes in strings.

import { isSpace, scanInteger } from "../kit/integer.js";

export type Expr =
  /** Literal bytes: BYTE, "STRING", le32:WORD ... */
  | { t: "bytes"; data: Buffer }
  /** @N (abs), @+N / @-N (rel, n signed), @^N (align). */
  | { t: "offset"; kind: "abs" | "rel" | "align"; n: number }
  | { t: "file"; path: string }
  | { t: "script"; script: string }
  /** ( ... ), a $VAR, or the whole data string: a new scope. */
  | { t: "list"; items: Expr[] }
  | { t: "name"; name: string }
  | { t: "assign"; name: string; expr: Expr }
  | { t: "repeat"; expr: Expr; n: number }
  /** expr[from:to]; to undefined means "to the end". */
  | { t: "slice"; expr: Expr; from: number; to: number | undefined };

export class DataFormatError extends Error {}

/** Largest offset or count: sizes are JavaScript numbers. */
export const MAX_OFFSET = Number.MAX_SAFE_INTEGER;

/** Where $VAR values come from: the plugin's extra parameters, then the environment. */
export type VarLookup = (name: string) => string | undefined;

/** Parse a data string. Throws DataFormatError with a one-line message. */
export function parseData(text: string, lookup: VarLookup = () => undefined): Expr {
  return new Parser(lookup).parseTop(text, undefined);
}

const NAME_CHAR = /[A-Za-z0-9_-]/;
const VAR_START = /[A-Za-z_]/;
const VAR_CHAR = /[A-Za-z0-9_]/;
/** Characters that end a <FILE name (nbdkit's set plus all whitespace). */
const FILE_END = "*[)";

class Parser {
  /** $VAR -> its parsed value (null while being parsed: a cycle). */
  private vars = new Map<string, Expr | null>();

  constructor(private lookup: VarLookup) {}

  /** Parse a whole string (the data parameter or a $VAR value) as one list. */
  parseTop(text: string, varName: string | undefined): Expr {
    return this.parseList(new Source(text, varName), 0);
  }

  private parseList(src: Source, level: number): Expr {
    const items: Expr[] = [];
    const s = src.text;
    for (;;) {
      const c = s[src.i];
      if (c === undefined) {
        if (level > 0) throw src.error("unmatched '('");
        return { t: "list", items };
      }
      if (isSpace(c)) {
        src.i++;
        continue;
      }
      switch (c) {
        case "#":
          while (src.i < s.length && s[src.i] !== "\n") src.i++;
          break;
        case "(":
          src.i++;
          items.push(this.parseList(src, level + 1));
          break;
        case ")":
          if (level === 0) throw src.error("unmatched ')'");
          src.i++;
          return { t: "list", items };
        case "@":
          items.push(this.parseOffset(src));
          break;
        case "*": {
          src.i++;
          const e = popData(src, items, "*N");
          const n = src.number(true, "*N");
          if (n === null) throw src.error("*N: expected a number of repeats after '*'");
          items.push({ t: "repeat", expr: e, n });
          break;
        }
        case "[": {
          src.i++;
          const e = popData(src, items, "[N:M]");
          items.push(this.parseSlice(src, e));
          break;
        }
        case "<":
          items.push(this.parseSource(src));
          break;
        case '"':
          src.i++;
          items.push({ t: "bytes", data: parseString(src) });
          break;
        case "\\":
          items.push({ t: "name", name: parseName(src) });
          break;
        case "-": {
          if (s[src.i + 1] !== ">") throw src.error("unexpected '-' (did you mean '-> \\NAME'?)");
          src.i += 2;
          const e = popData(src, items, "->");
          while (isSpace(s[src.i])) src.i++;
          if (s[src.i] !== "\\") throw src.error("'->' must be followed by \\NAME");
          items.push({ t: "assign", name: parseName(src), expr: e });
          break;
        }
        case "$":
          items.push(this.parseVar(src));
          break;
        case "l":
        case "b":
          items.push({ t: "bytes", data: parseWord(src) });
          break;
        default:
          if (c >= "0" && c <= "9") {
            const at = src.i;
            const n = src.number(false, "BYTE")!;
            if (n > 255) throw src.error("BYTE must be in the range 0..255", at);
            items.push({ t: "bytes", data: Buffer.from([n]) });
            break;
          }
          throw src.error(`unexpected character '${c}'`);
      }
    }
  }

  private parseOffset(src: Source): Expr {
    const s = src.text;
    src.i++;
    const c = s[src.i];
    if (c === "+" || c === "-" || c === "^") {
      src.i++;
      const n = src.number(true, `@${c}N`);
      if (n === null) throw src.error(`@${c} must be followed by a number`);
      if (c === "^") {
        if (n === 0) throw src.error("@^0: the alignment must be at least 1");
        return { t: "offset", kind: "align", n };
      }
      return { t: "offset", kind: "rel", n: c === "-" ? -n : n };
    }
    if (c !== undefined && c >= "0" && c <= "9") {
      return { t: "offset", kind: "abs", n: src.number(false, "@OFFSET")! };
    }
    throw src.error("'@' must be followed by OFFSET, +N, -N or ^ALIGNMENT");
  }

  private parseSlice(src: Source, e: Expr): Expr {
    const s = src.text;
    const from = src.number(true, "[N:M]");
    while (isSpace(s[src.i])) src.i++;
    if (s[src.i] !== ":") throw src.error("[N:M]: expected ':'");
    src.i++;
    const to = src.number(true, "[N:M]");
    while (isSpace(s[src.i])) src.i++;
    if (s[src.i] !== "]") throw src.error("[N:M]: expected ']'");
    src.i++;
    const f = from ?? 0;
    if (to !== null && to < f) throw src.error(`[${f}:${to}] does not describe a valid slice`);
    return { t: "slice", expr: e, from: f, to: to ?? undefined };
  }

  private parseSource(src: Source): Expr {
    const s = src.text;
    if (s[src.i + 1] === "(") {
      const start = src.i + 2;
      let depth = 0;
      let j = start;
      for (; j < s.length; j++) {
        if (s[j] === "(") depth++;
        else if (s[j] === ")") {
          if (depth === 0) break;
          depth--;
        }
      }
      if (j >= s.length) throw src.error("<(SCRIPT) has no closing ')'");
      if (j === start) throw src.error("<() has no script");
      src.i = j + 1;
      return { t: "script", script: s.slice(start, j) };
    }
    src.i++;
    const start = src.i;
    while (src.i < s.length && !isSpace(s[src.i]) && !FILE_END.includes(s[src.i]!)) src.i++;
    if (src.i === start) throw src.error("'<' must be followed by a file name or (SCRIPT)");
    return { t: "file", path: s.slice(start, src.i) };
  }

  private parseVar(src: Source): Expr {
    const s = src.text;
    const at = src.i;
    src.i++;
    if (!VAR_START.test(s[src.i] ?? "")) throw src.error("'$' must be followed by a variable name");
    const start = src.i;
    while (src.i < s.length && VAR_CHAR.test(s[src.i]!)) src.i++;
    const name = s.slice(start, src.i);
    if (this.vars.has(name)) {
      const done = this.vars.get(name);
      if (done === null) throw src.error(`$${name}: the variable refers to itself`, at);
      return done!;
    }
    const value = this.lookup(name);
    if (value === undefined) throw src.error(`$${name}: variable not found`, at);
    this.vars.set(name, null);
    const e = this.parseTop(value, name);
    this.vars.set(name, e);
    return e;
  }
}

/** The data string (or a $VAR's value) being parsed, and the position in it. */
class Source {
  i = 0;
  constructor(
    readonly text: string,
    readonly varName: string | undefined,
  ) {}

  error(msg: string, at = this.i): DataFormatError {
    const where = this.varName === undefined ? `offset ${at}` : `offset ${at} of $${this.varName}`;
    return new DataFormatError(`${msg} (at ${where})`);
  }

  /** A non-negative integer here (null if none), within MAX_OFFSET. */
  number(skipSpace: boolean, what: string): number | null {
    const at = this.i;
    let r;
    try {
      r = scanInteger(this.text, this.i, skipSpace);
    } catch (e) {
      throw this.error(`${what}: ${(e as Error).message}`, at);
    }
    if (r === null) return null;
    if (r.value < 0n) throw this.error(`${what}: the number must not be negative`, at);
    if (r.value > BigInt(MAX_OFFSET)) throw this.error(`${what}: ${r.value} is too large`, at);
    this.i = r.end;
    return Number(r.value);
  }
}

/** Take the last item of a list for a postfix operator; it must be data. */
function popData(src: Source, items: Expr[], op: string): Expr {
  const e = items.pop();
  if (e === undefined) throw src.error(`${op} must follow an expression`);
  if (e.t === "offset") throw src.error(`${op} cannot be applied to an @offset`);
  return e;
}

/** \NAME at src.i; returns NAME. */
function parseName(src: Source): string {
  const s = src.text;
  src.i++; // the backslash
  const start = src.i;
  while (src.i < s.length && NAME_CHAR.test(s[src.i]!)) src.i++;
  if (src.i === start) throw src.error("'\\' must be followed by a name (letters, digits, '_' or '-')");
  return s.slice(start, src.i);
}

const WORD = /^(le|be)(16|32|64):/;

/** le16:N be16:N le32:N be32:N le64:N be64:N */
function parseWord(src: Source): Buffer {
  const s = src.text;
  const m = WORD.exec(s.slice(src.i, src.i + 5));
  if (!m) throw src.error('expected "le16/32/64:" or "be16/32/64:"');
  src.i += 5;
  const at = src.i;
  const bits = Number(m[2]);
  let r;
  try {
    r = s[src.i] === "-" ? undefined : scanInteger(s, src.i, false);
  } catch (e) {
    throw src.error(`${m[0]} ${(e as Error).message}`, at);
  }
  if (!r) throw src.error(`${m[0]} must be followed by an unsigned number`, at);
  if (/[0-9A-Za-z_.]/.test(s[r.end] ?? "")) throw src.error(`${m[0]} trailing garbage after the number`, r.end);
  if (r.value >= 1n << BigInt(bits)) throw src.error(`${m[0]}${r.value} does not fit in ${bits} bits`, at);
  src.i = r.end;
  return writeWord(Buffer.alloc(bits / 8), r.value, m[1] === "le");
}

function writeWord(b: Buffer, v: bigint, little: boolean): Buffer {
  for (let i = 0; i < b.length; i++) {
    const byte = Number((v >> BigInt(8 * i)) & 0xffn);
    b[little ? i : b.length - 1 - i] = byte;
  }
  return b;
}

/** A "STRING" after its opening quote, with C escapes; returns its UTF-8 bytes. */
function parseString(src: Source): Buffer {
  const s = src.text;
  const out: number[] = [];
  const start = src.i - 1;
  const push = (str: string) => {
    for (const byte of Buffer.from(str, "utf8")) out.push(byte);
  };
  for (;;) {
    if (src.i >= s.length) throw src.error("unterminated string", start);
    const c = s[src.i]!;
    if (c === '"') {
      src.i++;
      return Buffer.from(out);
    }
    if (c !== "\\") {
      const cp = s.codePointAt(src.i)!;
      const ch = String.fromCodePoint(cp);
      push(ch);
      src.i += ch.length;
      continue;
    }
    const at = src.i;
    src.i++;
    const e = s[src.i];
    if (e === undefined) throw src.error("unterminated string", start);
    src.i++;
    switch (e) {
      case "a": out.push(0x07); break;
      case "b": out.push(0x08); break;
      case "f": out.push(0x0c); break;
      case "n": out.push(0x0a); break;
      case "r": out.push(0x0d); break;
      case "t": out.push(0x09); break;
      case "v": out.push(0x0b); break;
      case "x": {
        const hex = s.slice(src.i, src.i + 2);
        if (!/^[0-9a-fA-F]{2}$/.test(hex)) throw src.error("\\xNN must be followed by exactly two hexadecimal digits", at);
        out.push(parseInt(hex, 16));
        src.i += 2;
        break;
      }
      case "u":
      case "U": {
        const n = e === "u" ? 4 : 8;
        const hex = s.slice(src.i, src.i + n);
        if (!new RegExp(`^[0-9a-fA-F]{${n}}$`).test(hex)) throw src.error(`\\${e} must be followed by exactly ${n} hexadecimal digits`, at);
        const cp = parseInt(hex, 16);
        if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) throw src.error(`\\${e}${hex} is not a Unicode character`, at);
        push(String.fromCodePoint(cp));
        src.i += n;
        break;
      }
      default:
        if (e >= "0" && e <= "7") {
          // Octal: up to three digits, the first already read.
          let v = e.charCodeAt(0) - 48;
          for (let k = 0; k < 2 && s[src.i] !== undefined && s[src.i]! >= "0" && s[src.i]! <= "7"; k++) {
            v = v * 8 + (s.charCodeAt(src.i) - 48);
            src.i++;
          }
          if (v > 255) throw src.error(`\\${s.slice(at + 1, src.i)} is larger than a byte`, at);
          out.push(v);
        } else if (e === "8" || e === "9") {
          throw src.error(`\\${e} is not a valid escape`, at);
        } else {
          // Any other escaped character stands for itself (\" \\ \' ...).
          const cp = s.codePointAt(src.i - 1)!;
          const ch = String.fromCodePoint(cp);
          push(ch);
          src.i += ch.length - 1;
        }
    }
  }
}
