// What `npm run diagrams` writes into diagrams/, as a pure function of
// src/machines: ID.mmd (Mermaid), ID.dot (Graphviz), ID.svg and README.md.
// SVG comes from the WebAssembly build of Graphviz (@hpcc-js/wasm-graphviz,
// pinned exactly in package.json), so every machine renders the same bytes
// with no system graphviz. Shared by scripts/diagrams.ts and the staleness
// test (test/machines/diagrams.test.ts).
import { Graphviz } from "@hpcc-js/wasm-graphviz";
import { machines } from "../src/machines/index.js";
import { toDot, toMermaid } from "../src/machines/render.js";

let graphviz: Promise<Graphviz> | undefined;

export async function dotToSvg(dot: string): Promise<string> {
  graphviz ??= Graphviz.load();
  return (await graphviz).dot(dot, "svg");
}

/** File name (in diagrams/) -> content, in writing order. */
export async function diagramFiles(): Promise<Map<string, string>> {
  const ids = new Set<string>();
  for (const { id } of machines) {
    if (ids.has(id)) throw new Error(`duplicate machine id ${id} in src/machines/index.ts`);
    ids.add(id);
  }
  const files = new Map<string, string>();
  // README order follows src/machines/index.ts (it reads like the protocol: server, handshake, ...).
  const readme: string[] = [
    "# State machine diagrams",
    "",
    "Generated from `src/machines` by `npm run diagrams` (scripts/diagrams.ts); do not edit by hand.",
    "`test/machines/diagrams.test.ts` fails when a file here is stale. The SVGs are rendered by",
    "Graphviz's WebAssembly build (npm @hpcc-js/wasm-graphviz): no system graphviz is needed.",
    "",
    "Transition labels read `EVENT [guard] / actions`; guarded transitions of one event are tried in order.",
    "",
  ];
  for (const { id, machine, summary } of machines) {
    const mmd = toMermaid(machine);
    const dot = toDot(machine);
    files.set(`${id}.mmd`, mmd);
    files.set(`${id}.dot`, dot);
    files.set(`${id}.svg`, await dotToSvg(dot));
    readme.push(
      `## ${id}`,
      "",
      summary,
      "",
      `Machine \`${machine.id}\`: [Mermaid](${id}.mmd) · [Graphviz](${id}.dot) · [SVG](${id}.svg)`,
      "",
      "```mermaid",
      mmd.trimEnd(),
      "```",
      "",
    );
  }
  files.set("README.md", readme.join("\n"));
  return files;
}
