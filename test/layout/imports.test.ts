// The shape of src/ (issue 11.4, docs/architecture.md): no module imports
// itself back through others, and the core (actors, backend, machines,
// options, protocol) never reaches into the status page, which watches the
// core from outside through the inspect events and the server's status.
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), "../../src");

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith(".ts") && !e.name.endsWith(".d.ts") ? [join(dir, e.name)] : [],
  );
}

/** Relative imports of a file (static, re-exports and dynamic), type-only ones marked. */
function importsOf(file: string): { to: string; typeOnly: boolean }[] {
  const text = readFileSync(file, "utf8");
  const out: { to: string; typeOnly: boolean }[] = [];
  const re = /(?:^|\n)\s*(import|export)\s+(type\s+)?(?:[^"';]*?\s+from\s+)?["'](\.{1,2}\/[^"']+)["']|import\(\s*["'](\.{1,2}\/[^"']+)["']\s*\)/g;
  for (const m of text.matchAll(re)) {
    const spec = m[3] ?? m[4]!;
    const to = resolve(dirname(file), spec.replace(/\.js$/, ".ts"));
    out.push({ to, typeOnly: Boolean(m[2]) });
  }
  return out;
}

const graph = new Map(files(SRC).map((f) => [f, importsOf(f)]));
const name = (f: string) => relative(SRC, f);

/** Every cycle through the graph (as found by a depth-first search), each as a list of files. */
function cycles(includeTypes: boolean): string[][] {
  const found: string[][] = [];
  const state = new Map<string, 1 | 2>();
  const stack: string[] = [];
  const visit = (f: string) => {
    state.set(f, 1);
    stack.push(f);
    for (const { to, typeOnly } of graph.get(f) ?? []) {
      if (typeOnly && !includeTypes) continue;
      if (!graph.has(to)) continue;
      if (state.get(to) === 1) found.push([...stack.slice(stack.indexOf(to)), to].map(name));
      else if (!state.has(to)) visit(to);
    }
    stack.pop();
    state.set(f, 2);
  };
  for (const f of graph.keys()) if (!state.has(f)) visit(f);
  return found;
}

describe("src/ imports", () => {
  it("every relative import names a file that exists", () => {
    const missing = [...graph].flatMap(([f, imps]) => imps.filter((i) => !graph.has(i.to)).map((i) => `${name(f)} -> ${relative(SRC, i.to)}`));
    expect(missing).toEqual([]);
  });

  it("no import cycles, type-only imports included", () => {
    expect(cycles(true)).toEqual([]);
  });

  it("the core never imports the status page", () => {
    const core = ["actors/", "backend/", "machines/", "options/", "protocol/", "plugins/", "filters/", "client/", "sys/"];
    const bad = [...graph].flatMap(([f, imps]) =>
      core.some((c) => name(f).startsWith(c)) ? imps.filter((i) => name(i.to).startsWith("status/")).map((i) => `${name(f)} -> ${name(i.to)}`) : [],
    );
    expect(bad).toEqual([]);
  });

  it("the finder sees cycles (a graph with one is reported)", () => {
    // The search itself, on a made-up graph: a -> b -> a.
    const a = join(SRC, "__a.ts");
    const b = join(SRC, "__b.ts");
    graph.set(a, [{ to: b, typeOnly: true }]);
    graph.set(b, [{ to: a, typeOnly: false }]);
    try {
      expect(cycles(true)).toContainEqual(["__a.ts", "__b.ts", "__a.ts"]);
      expect(cycles(false)).toEqual([]);
    } finally {
      graph.delete(a);
      graph.delete(b);
    }
  });
});
