// Pure rendering of an XState machine (walking machine.root) as Mermaid
// stateDiagram-v2 and Graphviz DOT. Deterministic: states in definition
// order, events sorted, guarded candidates of one event in evaluation order.
import type { AnyStateMachine, AnyStateNode } from "xstate";

export interface Edge {
  event: string;
  guard?: string;
  actions: string[];
  /** Target state nodes; empty for a targetless (self) transition. */
  targets: AnyStateNode[];
}

type Named = { type?: unknown; params?: unknown; name?: string; guards?: unknown[] };

/** A guard as text: names, with not/and/or combinators formatted recursively. */
export function formatGuard(g: unknown): string {
  if (g === undefined || g === null) return "";
  if (typeof g === "string") return g;
  const n = g as Named;
  if (typeof g === "function" && Array.isArray(n.guards)) {
    const parts = n.guards.map(formatGuard);
    switch (n.name) {
      case "not":
        return `not(${parts[0]})`;
      case "and":
        return `and(${parts.join(", ")})`;
      case "or":
        return `or(${parts.join(", ")})`;
      default:
        return `${n.name}(${parts.join(", ")})`;
    }
  }
  if (typeof g === "object" && typeof n.type === "string") return n.type;
  if (typeof g === "function") return n.name || "inline";
  return String(g);
}

function formatParams(p: unknown): string {
  // Dynamic params (a function) have no stable text: show the name only.
  if (p === undefined || p === null || typeof p === "function") return "";
  const prim = (v: unknown) => (v === null || typeof v !== "object" && typeof v !== "function" ? String(v) : "…");
  if (typeof p === "object") {
    const vals = Object.keys(p).sort().map((k) => prim((p as Record<string, unknown>)[k]));
    return vals.length ? `(${vals.join(", ")})` : "";
  }
  return `(${prim(p)})`;
}

/** An action as text: its name (with parameter values), or "assign"/"inline". */
export function formatAction(a: unknown): string {
  if (typeof a === "string") return a;
  const n = a as Named;
  if (typeof a === "object" && a !== null && typeof n.type === "string") return n.type + formatParams(n.params);
  if (typeof a === "function") {
    const t = (a as { type?: unknown }).type;
    if (typeof t === "string" && t.startsWith("xstate.")) return t.slice("xstate.".length);
    return n.name || "inline";
  }
  return String(a);
}

/** Child state nodes in definition order. */
export function children(node: AnyStateNode): AnyStateNode[] {
  return Object.values(node.states ?? {}) as AnyStateNode[];
}

export function initialOf(node: AnyStateNode): AnyStateNode | undefined {
  if (node.type !== "compound") return undefined;
  return node.initial?.target?.[0] as AnyStateNode | undefined;
}

/** Event types as a reader knows them: invoked effects' outcomes and delays by name. */
export function eventName(type: string): string {
  if (type === "") return "always";
  const outcome = /^xstate\.(done|error)\.actor\.(.+)$/.exec(type);
  if (outcome) return `${outcome[1]}: ${outcome[2]}`;
  const after = /^xstate\.after\.([^.]+)\./.exec(type);
  if (after) return `after ${after[1]}`;
  return type;
}

/** Every transition of one state node (own, not inherited), events sorted. */
export function edgesOf(node: AnyStateNode): Edge[] {
  const out: Edge[] = [];
  type T = { guard?: unknown; actions?: unknown[]; target?: readonly AnyStateNode[] };
  const map = node.transitions as unknown as Map<string, T[]>;
  const byEvent: [string, T[]][] = [...map.entries()];
  if (node.always?.length) byEvent.push(["", node.always as unknown as T[]]);
  byEvent.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  for (const [type, ts] of byEvent) {
    for (const t of ts) {
      const guard = formatGuard(t.guard);
      out.push({
        event: eventName(type),
        guard: guard || undefined,
        actions: (t.actions ?? []).map(formatAction),
        targets: [...(t.target ?? [])],
      });
    }
  }
  return out;
}

export function edgeLabel(e: Edge): string {
  let s = e.event;
  if (e.guard) s += ` [${e.guard}]`;
  if (e.actions.length) s += ` / ${e.actions.join(", ")}`;
  return s;
}

function entryLabel(node: AnyStateNode): string[] {
  const lines: string[] = [];
  if (node.entry?.length) lines.push(`entry / ${node.entry.map(formatAction).join(", ")}`);
  const inv = (node.invoke ?? []) as { src?: unknown }[];
  if (inv.length) lines.push(`invoke / ${inv.map((i) => (typeof i.src === "string" ? i.src : "actor")).join(", ")}`);
  if (node.exit?.length) lines.push(`exit / ${node.exit.map(formatAction).join(", ")}`);
  return lines;
}

/** A node's id relative to the root, usable as an identifier. */
function localId(node: AnyStateNode): string {
  return (node.path as string[]).join("__") || "root";
}

// --------------------------------------------------------------- Mermaid

function mmdEscape(s: string): string {
  return s.replace(/[#:;]/g, (c) => `#${c.charCodeAt(0)};`);
}

function mmdNode(node: AnyStateNode, indent: string, lines: string[]): void {
  const kids = children(node);
  const init = initialOf(node);
  if (init) lines.push(`${indent}[*] --> ${localId(init)}`);
  for (const k of kids) {
    const id = localId(k);
    if (id !== k.key || k.type === "compound" || k.type === "parallel") {
      if (k.type === "compound" || k.type === "parallel") {
        lines.push(`${indent}state "${k.key}" as ${id} {`);
        mmdNode(k, indent + "  ", lines);
        lines.push(`${indent}}`);
      } else {
        lines.push(`${indent}state "${k.key}" as ${id}`);
      }
    }
    for (const l of entryLabel(k)) lines.push(`${indent}${id} : ${mmdEscape(l)}`);
  }
  for (const k of kids) {
    for (const e of edgesOf(k)) {
      const label = mmdEscape(edgeLabel(e));
      const targets = e.targets.length ? e.targets : [k];
      for (const t of targets) lines.push(`${indent}${localId(k)} --> ${localId(t)} : ${label}`);
    }
    if (k.type === "final") lines.push(`${indent}${localId(k)} --> [*]`);
  }
}

/** Mermaid stateDiagram-v2 source for a machine. */
export function toMermaid(machine: AnyStateMachine): string {
  const lines = ["stateDiagram-v2"];
  mmdNode(machine.root, "  ", lines);
  return lines.join("\n") + "\n";
}

// ------------------------------------------------------------------- DOT

function dotQuote(s: string): string {
  return `"${s.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`;
}

/** The DOT node an edge attaches to: a compound state's initial marker. */
function dotAnchor(node: AnyStateNode): string {
  return node.type === "compound" || node.type === "parallel" ? `__start__${localId(node)}` : localId(node);
}

function dotNode(node: AnyStateNode, indent: string, lines: string[], edges: string[]): void {
  const init = initialOf(node);
  if (init || node.type === "parallel") {
    const start = `__start__${localId(node)}`;
    lines.push(`${indent}${dotQuote(start)} [shape=point, width=0.15, label=""];`);
    if (init) edges.push(`  ${dotQuote(start)} -> ${dotQuote(dotAnchor(init))};`);
  }
  for (const k of children(node)) {
    const id = localId(k);
    if (k.type === "compound" || k.type === "parallel") {
      lines.push(`${indent}subgraph ${dotQuote(`cluster_${id}`)} {`);
      lines.push(`${indent}  label=${dotQuote([k.key, ...entryLabel(k)].join("\n"))};`);
      dotNode(k, indent + "  ", lines, edges);
      lines.push(`${indent}}`);
    } else {
      const attrs = [`label=${dotQuote([k.key, ...entryLabel(k)].join("\n"))}`];
      if (k.type === "final") attrs.push("peripheries=2");
      lines.push(`${indent}${dotQuote(id)} [${attrs.join(", ")}];`);
    }
    for (const e of edgesOf(k)) {
      const targets = e.targets.length ? e.targets : [k];
      for (const t of targets) {
        edges.push(`  ${dotQuote(dotAnchor(k))} -> ${dotQuote(dotAnchor(t))} [label=${dotQuote(edgeLabel(e))}];`);
      }
    }
  }
}

/** Graphviz DOT source for a machine. */
export function toDot(machine: AnyStateMachine): string {
  const lines = [
    `digraph ${dotQuote(machine.id)} {`,
    "  rankdir=LR;",
    '  node [shape=box, style=rounded, fontname="Helvetica", fontsize=11];',
    '  edge [fontname="Helvetica", fontsize=9];',
  ];
  const edges: string[] = [];
  dotNode(machine.root, "  ", lines, edges);
  lines.push(...edges, "}");
  return lines.join("\n") + "\n";
}
