// Regenerate diagrams/ from src/machines (see ./diagram-files.ts for what
// is written). Run with `npm run diagrams` (npx tsx scripts/diagrams.ts).
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { diagramFiles } from "./diagram-files.js";

const outDir = join(dirname(fileURLToPath(import.meta.url)), "..", "diagrams");
mkdirSync(outDir, { recursive: true });
for (const [name, content] of await diagramFiles()) {
  writeFileSync(join(outDir, name), content);
  console.log(`diagrams/${name}`);
}
