// The generated diagrams the status page embeds, read once at startup from
// the package's diagrams/ folder (npm run diagrams): the Graphviz SVG of
// each machine, or its Mermaid source when the SVG was not generated.

import { readFileSync } from "node:fs";
import { machines } from "../machines/index.js";

export interface Diagram {
  /** File stem: diagrams/ID.svg. */
  id: string;
  /** The machine's own id ("sharedHandle"). */
  machine: string;
  summary: string;
  /** Inline SVG markup (no XML prolog, doctype or comments), if diagrams/ID.svg exists. */
  svg?: string;
  /** Mermaid source, the fallback without an SVG. */
  mermaid?: string;
}

/** src/status or dist/status -> the package root's diagrams/. */
const DIR = new URL("../../diagrams/", import.meta.url);

function read(name: string): string | undefined {
  try {
    return readFileSync(new URL(name, DIR), "utf8");
  } catch {
    return undefined;
  }
}

/** Graphviz's SVG reduced to the <svg> element, ready to inline in HTML. */
export function inlineSvg(svg: string): string {
  return svg
    .replace(/<\?xml[^>]*\?>/g, "")
    .replace(/<!DOCTYPE[^>]*>/gi, "")
    .replace(/<!--[\s\S]*?-->/g, "")
    .trim();
}

export function loadDiagrams(): Diagram[] {
  return machines.map(({ id, machine, summary }) => {
    const svg = read(`${id}.svg`);
    const d: Diagram = { id, machine: machine.id, summary };
    if (svg !== undefined) d.svg = inlineSvg(svg);
    else {
      const mmd = read(`${id}.mmd`);
      if (mmd !== undefined) d.mermaid = mmd;
    }
    return d;
  });
}
