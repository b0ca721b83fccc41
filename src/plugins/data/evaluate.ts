// Evaluation of a parsed data expression into a sparse image, with
// nbdkit's scoping: ( ... ) and $VAR start a new image at offset 0 whose
// size is the largest offset reached; the result is copied (holes
// included) into the enclosing image at its current offset. "-> \NAME"
// binds an expression for the rest of the scope; \NAME evaluates it in
// the scope where it was bound (so a name never refers to itself).
//
// An expression repeated 0 times or sliced to nothing is not evaluated at
// all, as in nbdkit (a script there is never run, a name need not exist).

import type { Image } from "./image.js";
import { DataFormatError, MAX_OFFSET, type Expr } from "./parse.js";
import { Canvas, EMPTY, pieceLength, repeat, slice, type Piece } from "./pieces.js";
import { readFileSlice, runScriptSlice } from "./sources.js";

/** Bindings in scope, innermost first; `next` is also the scope the binding was made in. */
interface Binding {
  name: string;
  expr: Expr;
  next: Binding | null;
  /** The value, computed at the first use (the expression is fixed, so is its value). */
  value?: Promise<Piece>;
}

export interface EvaluateOptions {
  /** Give up (an error, not a hang) after this many evaluation steps. */
  maxSteps?: number;
}

const MAX_STEPS = 10_000_000;

/** Evaluate the whole data string (a list) into an image. */
export async function evaluateData(root: Expr, opts: EvaluateOptions = {}): Promise<Image> {
  const ev = new Evaluator(opts.maxSteps ?? MAX_STEPS);
  return (await ev.list(root.t === "list" ? root.items : [root], null)).toImage();
}

class Evaluator {
  private steps = 0;

  constructor(private maxSteps: number) {}

  private step(): void {
    if (++this.steps > this.maxSteps) {
      throw new DataFormatError(`the data expression is too complex (more than ${this.maxSteps} evaluation steps)`);
    }
  }

  /** A sequence of expressions in a new scope, written into a new canvas. */
  async list(items: Expr[], env: Binding | null): Promise<Canvas> {
    const canvas = new Canvas();
    let off = 0;
    for (const e of items) {
      this.step();
      if (e.t === "offset") {
        if (e.kind === "abs") off = e.n;
        else if (e.kind === "rel") {
          if (off + e.n < 0) throw new DataFormatError(`@-${-e.n} must not be larger than the current offset ${off}`);
          off += e.n;
        } else {
          const r = off % e.n;
          if (r !== 0) off += e.n - r;
        }
        if (off > MAX_OFFSET) throw new DataFormatError(`the offset ${off} is too large`);
      } else if (e.t === "assign") {
        env = { name: e.name, expr: e.expr, next: env };
      } else {
        const p = await this.piece(e, env);
        const len = pieceLength(p);
        if (off + len > MAX_OFFSET) throw new DataFormatError(`the data is too large (beyond offset ${MAX_OFFSET})`);
        canvas.place(p, off);
        off += len;
      }
      canvas.grow(off);
    }
    return canvas;
  }

  async piece(e: Expr, env: Binding | null): Promise<Piece> {
    this.step();
    switch (e.t) {
      case "bytes":
        return { k: "bytes", b: e.data };
      case "file":
        return readFileSlice(e.path);
      case "script":
        return runScriptSlice(e.script);
      case "list": {
        const only = e.items.length === 1 ? e.items[0]! : undefined;
        // A single data item needs no scope of its own.
        if (only && only.t !== "offset" && only.t !== "assign") return this.piece(only, env);
        return (await this.list(e.items, env)).result();
      }
      case "name": {
        let b = env;
        while (b && b.name !== e.name) b = b.next;
        if (!b) throw new DataFormatError(`\\${e.name} is not defined`);
        const bound = b;
        return (bound.value ??= this.piece(bound.expr, bound.next));
      }
      case "assign":
        // An assignment on its own (under * or [:]) binds nothing outside.
        return EMPTY;
      case "repeat":
        if (e.n === 0) return EMPTY;
        return repeat(await this.piece(e.expr, env), e.n);
      case "slice": {
        if (e.to !== undefined && e.to === e.from) return EMPTY;
        let inner = e.expr;
        while (inner.t === "list" && inner.items.length === 1 && (inner.items[0]!.t === "list" || inner.items[0]!.t === "file" || inner.items[0]!.t === "script")) {
          inner = inner.items[0]!;
        }
        // Files and scripts are read only as far as the slice goes.
        if (inner.t === "file") return readFileSlice(inner.path, e.from, e.to);
        if (inner.t === "script") return runScriptSlice(inner.script, e.from, e.to);
        return slice(await this.piece(inner, env), e.from, e.to);
      }
      case "offset":
        throw new DataFormatError("an @offset cannot be used here");
    }
  }
}
