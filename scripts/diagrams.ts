// Regenerate diagrams/ from src/machines: ID.mmd (Mermaid), ID.dot
// (Graphviz), ID.svg (when `dot` is installed) and README.md.
// Run with `npm run diagrams` (npx tsx scripts/diagrams.ts).
import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { machines } from "../src/machines/index.js";
import { toDot, toMermaid } from "../src/machines/render.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const outDir = join(root, "diagrams");
mkdirSync(outDir, { recursive: true });

const hasDot = spawnSync("dot", ["-V"], { stdio: "ignore" }).status === 0;
// README order follows src/machines/index.ts (it reads like the protocol: server, handshake, ...).
const ids = new Set<string>();
for (const { id } of machines) {
  if (ids.has(id)) throw new Error(`duplicate machine id ${id} in src/machines/index.ts`);
  ids.add(id);
}
const entries = machines;

const readme: string[] = [
  "# State machine diagrams",
  "",
  "Generated from `src/machines` by `npm run diagrams` (scripts/diagrams.ts); do not edit by hand.",
  "`test/machines/diagrams.test.ts` fails when a `.mmd` or `.dot` file here is stale.",
  "",
  "Transition labels read `EVENT [guard] / actions`; guarded transitions of one event are tried in order.",
  "",
];

for (const { id, machine, summary } of entries) {
  const mmd = toMermaid(machine);
  const dot = toDot(machine);
  writeFileSync(join(outDir, `${id}.mmd`), mmd);
  writeFileSync(join(outDir, `${id}.dot`), dot);
  let svgNote = `[SVG](${id}.svg)`;
  if (hasDot) {
    const r = spawnSync("dot", ["-Tsvg", "-o", join(outDir, `${id}.svg`), join(outDir, `${id}.dot`)], {
      encoding: "utf8",
    });
    if (r.status !== 0) throw new Error(`dot -Tsvg failed for ${id}: ${r.stderr}`);
  } else {
    svgNote = "SVG not generated (install graphviz for `dot`)";
    console.warn(`diagrams: \`dot\` not found; skipped ${id}.svg`);
  }
  readme.push(
    `## ${id}`,
    "",
    summary,
    "",
    `Machine \`${machine.id}\`: [Mermaid](${id}.mmd) · [Graphviz](${id}.dot) · ${svgNote}`,
    "",
    "```mermaid",
    mmd.trimEnd(),
    "```",
    "",
  );
  console.log(`diagrams/${id}.{mmd,dot${hasDot ? ",svg" : ""}}`);
}

writeFileSync(join(outDir, "README.md"), readme.join("\n"));
console.log("diagrams/README.md");
