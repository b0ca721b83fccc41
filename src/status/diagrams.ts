// The diagrams the status page embeds, laid out once at startup (only with
// --status-page) from each machine's DOT (src/machines/render.ts) made
// readable for the page (src/status/page-dot.ts), by Graphviz compiled to
// WebAssembly (@hpcc-js/wasm-graphviz: nothing to install). Each diagram
// is laid out left-to-right, or top-to-bottom when that is what fits a
// screen. If the layout fails, the committed diagrams/ID.svg is used, or
// the Mermaid source as text.

import { readFileSync } from "node:fs";
import { machines } from "../machines/index.js";
import { toDot } from "../machines/render.js";
import { pageDot } from "./page-dot.js";

export interface Diagram {
  /** File stem: diagrams/ID.svg. */
  id: string;
  /** The machine's own id ("sharedHandle"). */
  machine: string;
  summary: string;
  /** Inline SVG markup (no XML prolog, doctype or comments), sized in px. */
  svg?: string;
  /** Mermaid source, the fallback without an SVG. */
  mermaid?: string;
}

/** src/status or dist/status -> the package root's diagrams/. */
const DIR = new URL("../../diagrams/", import.meta.url);

/** Page px per Graphviz point: 12 pt state names read as ~14 px, 10 pt labels as ~11.5 px. */
export const SCALE = 1.15;
/** Wider than this (points, left-to-right), a diagram is laid out top-to-bottom if that is narrower. */
const FIT_WIDTH_PT = 1150;

function read(name: string): string | undefined {
  try {
    return readFileSync(new URL(name, DIR), "utf8");
  } catch {
    return undefined;
  }
}

/**
 * Graphviz's SVG reduced to the <svg> element, ready to inline in HTML:
 * no prolog, doctype or comments; sized in px from its viewBox (points)
 * times `scale`, so it is drawn at a legible size rather than shrunk to
 * its box; element ids prefixed so several diagrams can share a page.
 */
export function inlineSvg(svg: string, prefix = "", scale = SCALE): string {
  let out = svg
    .replace(/<\?xml[^>]*\?>/g, "")
    .replace(/<!DOCTYPE[^>]*>/gi, "")
    .replace(/<!--[\s\S]*?-->/g, "")
    .trim();
  const vb = /<svg\b[^>]*\sviewBox="([-\d.]+) ([-\d.]+) ([\d.]+) ([\d.]+)"/.exec(out);
  if (vb) {
    const w = Math.ceil(Number(vb[3]) * scale);
    const h = Math.ceil(Number(vb[4]) * scale);
    out = out.replace(/<svg\b[^>]*?>/, (tag) =>
      tag.replace(/\swidth="[^"]*"/, ` width="${w}"`).replace(/\sheight="[^"]*"/, ` height="${h}"`),
    );
  }
  if (prefix) out = out.replace(/\sid="/g, ` id="${prefix}-`);
  return out;
}

/** Width in points of a Graphviz SVG. */
function widthOf(svg: string): number {
  const m = /<svg\b[^>]*\sviewBox="[-\d.]+ [-\d.]+ ([\d.]+) [\d.]+"/.exec(svg);
  return m ? Number(m[1]) : Infinity;
}

type Layout = (dot: string) => string;

async function graphviz(): Promise<Layout | undefined> {
  try {
    const { Graphviz } = await import("@hpcc-js/wasm-graphviz");
    const g = await Graphviz.load();
    return (dot) => g.dot(dot);
  } catch {
    return undefined;
  }
}

/** Left-to-right if it fits, else top-to-bottom if that is narrower. */
export function layOut(layout: Layout, dot: string): string {
  const lr = layout(dot);
  if (widthOf(lr) <= FIT_WIDTH_PT || !/\brankdir=LR;/.test(dot)) return lr;
  const tb = layout(dot.replace(/\brankdir=LR;/, "rankdir=TB;"));
  return widthOf(tb) < widthOf(lr) ? tb : lr;
}

export async function loadDiagrams(): Promise<Diagram[]> {
  const layout = await graphviz();
  return machines.map(({ id, machine, summary }) => {
    const d: Diagram = { id, machine: machine.id, summary };
    let svg: string | undefined;
    if (layout) {
      try {
        svg = layOut(layout, pageDot(toDot(machine)));
      } catch {
        svg = undefined;
      }
    }
    svg ??= read(`${id}.svg`);
    if (svg !== undefined) d.svg = inlineSvg(svg, `d-${id}`);
    else {
      const mmd = read(`${id}.mmd`);
      if (mmd !== undefined) d.mermaid = mmd;
    }
    return d;
  });
}
