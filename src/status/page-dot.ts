// The DOT the status page lays out, derived from the machine's DOT text
// (src/machines/render.ts toDot): the committed diagrams/ draw one edge per
// transition with its full label, which for a state with many self-loops
// (options' AWAIT_OPTION has ~25) stacks labels on top of each other and
// makes the graph thousands of points wide. For the page, all transitions
// between the same two states become ONE edge whose label lists the events
// (one per line, guards of one event folded into "[a | b | else]"), and
// the actions move to the edge's tooltip. Transitions from a state to
// itself are not drawn as loops at all: they are listed inside the state's
// box ("↻ EVENT [guard]"), as UML draws internal transitions, so no loop
// or its label can land on anything else. States, events and guards stay.

/** One quoted DOT string: "..." with backslash escapes kept as written. */
const Q = String.raw`"(?:[^"\\]|\\.)*"`;
const EDGE = new RegExp(String.raw`^\s*(${Q})\s*->\s*(${Q})\s*(?:\[label=(${Q})\])?\s*;\s*$`);
const NODE = new RegExp(String.raw`^(\s*)(${Q})\s*\[label=(${Q})(.*)\];\s*$`);

/** A label in DOT with each line ended by \l (left-justified) rather than \n (centred). */
const leftLines = (s: string) => quote(s + "\n").replace(/\\n/g, "\\l");

/** A DOT string's text: "a\nb" -> a<newline>b, \" -> ". */
export function unquote(q: string): string {
  return q.slice(1, -1).replace(/\\(.)/g, (_, c: string) => (c === "n" || c === "l" ? "\n" : c));
}

function quote(s: string): string {
  return `"${s.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`;
}

/** A label as written by edgeLabel: "EVENT [guard] / a, b" -> its parts. */
export function splitLabel(label: string): { event: string; guard?: string; actions?: string } {
  const slash = label.indexOf(" / ");
  const head = slash < 0 ? label : label.slice(0, slash);
  const actions = slash < 0 ? undefined : label.slice(slash + 3);
  const g = /^(.*?) \[(.*)\]$/.exec(head);
  const out: { event: string; guard?: string; actions?: string } = { event: g ? g[1]! : head };
  if (g) out.guard = g[2]!;
  if (actions !== undefined) out.actions = actions;
  return out;
}

/** The merged label of all transitions from one state to another: one line per event. */
export function mergedLabel(labels: readonly string[]): string {
  const byEvent = new Map<string, string[]>();
  for (const l of labels) {
    if (l === "") continue;
    const { event, guard } = splitLabel(l);
    const guards = byEvent.get(event) ?? [];
    const g = guard ?? "else";
    if (!guards.includes(g)) guards.push(g);
    byEvent.set(event, guards);
  }
  return [...byEvent]
    .map(([event, guards]) => (guards.length === 1 && guards[0] === "else" ? event : `${event} [${guards.join(" | ")}]`))
    .join("\n");
}

/**
 * The page's DOT: parallel edges merged and self-transitions listed in
 * their state as above, labels left-justified (\l), a little more room
 * between ranks, and nodes filled white so the page's highlight colours
 * show. Lines it does not recognise pass through unchanged, so a change
 * in toDot's format degrades to the plain diagram.
 */
export function pageDot(dot: string): string {
  const lines = dot.split("\n");
  const out: string[] = [];
  const groups = new Map<string, { from: string; to: string; labels: string[] }>();
  let insertAt = -1;
  for (const line of lines) {
    const m = EDGE.exec(line);
    if (!m) {
      if (line.trim() === "}" && insertAt < 0) insertAt = out.length;
      out.push(line);
      continue;
    }
    const key = `${m[1]} ${m[2]}`;
    let g = groups.get(key);
    if (!g) {
      g = { from: m[1]!, to: m[2]!, labels: [] };
      groups.set(key, g);
    }
    g.labels.push(m[3] ? unquote(m[3]) : "");
  }
  if (insertAt < 0) return dot;
  const internal = new Map<string, { lines: string; tooltip: string }>();
  const edges: string[] = [];
  for (const g of groups.values()) {
    const label = mergedLabel(g.labels);
    const full = g.labels.filter((l) => l !== "").join("\n");
    if (g.from === g.to) {
      internal.set(g.from, { lines: label.split("\n").map((l) => `↻ ${l}`).join("\n"), tooltip: full });
      continue;
    }
    const attrs = label === "" ? [] : [`label=${leftLines(label)}`, `tooltip=${quote(full)}`];
    edges.push(`  ${g.from} -> ${g.to}${attrs.length ? ` [${attrs.join(", ")}]` : ""};`);
  }
  out.splice(insertAt, 0, ...edges);
  for (let i = 0; i < out.length; i++) {
    const n = NODE.exec(out[i]!);
    const own = n && internal.get(n[2]!);
    if (!n || !own) continue;
    // The state's own lines stay centred (\n); the internal transitions are left-justified below.
    const label = `${quote(unquote(n[3]!) + "\n").slice(0, -1)}${leftLines(own.lines).slice(1)}`;
    out[i] = `${n[1]}${n[2]} [label=${label}, tooltip=${quote(own.tooltip)}${n[4]}];`;
    internal.delete(n[2]!);
  }
  // After toDot's own defaults (later attribute statements win), before the first node.
  const first = out.findIndex((l) => /^\s*"/.test(l));
  if (first >= 0) {
    out.splice(
      first,
      0,
      "  nodesep=0.25; ranksep=0.45; pad=0.25; bgcolor=transparent;",
      '  node [style="rounded,filled", fillcolor=white, fontsize=12];',
      "  edge [fontsize=10];",
    );
  }
  return out.join("\n");
}
