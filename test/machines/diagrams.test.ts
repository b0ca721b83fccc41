// The committed diagrams (diagrams/ID.mmd, ID.dot, ID.svg and README.md)
// must match what src/machines renders now; regenerate them with `npm run
// diagrams`. SVGs come from Graphviz's WebAssembly build, so this holds on
// a machine without graphviz too.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { and, createMachine, not, or } from "xstate";
import { machines } from "../../src/machines/index.js";
import { formatGuard, toDot, toMermaid } from "../../src/machines/render.js";
import { diagramFiles } from "../../scripts/diagram-files.js";

const dir = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "diagrams");
const STALE = "diagrams/ is stale: run `npm run diagrams` and commit the result";

describe("diagrams", () => {
  for (const { id, machine } of machines) {
    for (const [ext, render] of [["mmd", toMermaid], ["dot", toDot]] as const) {
      it(`diagrams/${id}.${ext} is up to date`, () => {
        const file = join(dir, `${id}.${ext}`);
        expect(existsSync(file), `${file} is missing: ${STALE}`).toBe(true);
        expect(readFileSync(file, "utf8"), STALE).toBe(render(machine));
      });
    }
  }

  it("every file of diagrams/ is what `npm run diagrams` writes (SVGs and README.md included), and nothing else is there", async () => {
    const want = await diagramFiles();
    expect(readdirSync(dir).sort(), STALE).toEqual([...want.keys()].sort());
    for (const [name, content] of want) {
      expect(readFileSync(join(dir, name), "utf8"), `diagrams/${name}: ${STALE}`).toBe(content);
    }
  });

  it("rendering is deterministic", () => {
    for (const { machine } of machines) {
      expect(toMermaid(machine)).toBe(toMermaid(machine));
      expect(toDot(machine)).toBe(toDot(machine));
    }
  });

  it("formats guard combinators recursively", () => {
    expect(formatGuard("a")).toBe("a");
    expect(formatGuard({ type: "b", params: { x: 1 } })).toBe("b");
    expect(formatGuard(not(and(["a", or(["b", not("c")])])))).toBe("not(and(a, or(b, not(c))))");
  });

  it("escapes ':' in Mermaid labels, renders nested, final and targetless transitions", () => {
    const m = createMachine({
      id: "demo",
      initial: "outer",
      states: {
        outer: {
          initial: "inner",
          entry: "say: hi",
          states: { inner: { on: { "GO:NOW": { target: "done" } } }, done: { type: "final" } },
          on: { POKE: { actions: "poke" } },
        },
      },
    });
    const mmd = toMermaid(m);
    expect(mmd).toContain('state "outer" as outer {');
    expect(mmd).toContain("outer__inner --> outer__done : GO#58;NOW");
    expect(mmd).toContain("outer : entry / say#58; hi");
    expect(mmd).toContain("outer --> outer : POKE / poke");
    expect(mmd).toContain("outer__done --> [*]");
    const dot = toDot(m);
    expect(dot).toContain('subgraph "cluster_outer"');
    expect(dot).toContain('"outer__done" [label="done", peripheries=2];');
  });
});
