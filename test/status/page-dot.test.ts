// The diagrams as the status page lays them out: every transition between
// two states is one edge, self-transitions are listed inside their state,
// nothing of the machine is lost, and Graphviz (WebAssembly) lays each
// one out at a size a screen holds.
import { describe, expect, it } from "vitest";
import { machines } from "../../src/machines/index.js";
import { children, edgesOf, toDot } from "../../src/machines/render.js";
import { inlineSvg, loadDiagrams, SCALE } from "../../src/status/diagrams.js";
import { mergedLabel, pageDot, splitLabel, unquote } from "../../src/status/page-dot.js";

const EDGE = /^\s*("(?:[^"\\]|\\.)*")\s*->\s*("(?:[^"\\]|\\.)*")/;

describe("page DOT", () => {
  it("splits a label into event, guard and actions", () => {
    expect(splitLabel("ACQUIRE [hasRoom] / addWaiter, queueAcquire")).toEqual({ event: "ACQUIRE", guard: "hasRoom", actions: "addWaiter, queueAcquire" });
    expect(splitLabel("done: load")).toEqual({ event: "done: load" });
    expect(splitLabel("RELEASE [and(isLastRef, closeOnLastRelease)]")).toEqual({ event: "RELEASE", guard: "and(isLastRef, closeOnLastRelease)" });
  });

  it("folds the guards of one event, the unguarded one as else, one line per event", () => {
    expect(mergedLabel(["A [g1] / x", "A / y", "B", "A [g2]", "B / z"])).toBe("A [g1 | else | g2]\nB");
    expect(mergedLabel(["A", ""])).toBe("A");
  });

  for (const { id, machine } of machines) {
    it(`${id}: one edge per pair of states, self-transitions inside their state, every state and event kept`, () => {
      const dot = pageDot(toDot(machine));
      const pairs = dot.split("\n").map((l) => EDGE.exec(l)).filter((m) => m !== null).map((m) => `${m[1]} -> ${m[2]}`);
      expect(new Set(pairs).size).toBe(pairs.length);
      for (const p of pairs) expect(p.split(" -> ")[0]).not.toBe(p.split(" -> ")[1]);
      const text = unquote(`"${dot.replace(/"/g, "")}"`);
      for (const s of children(machine.root)) {
        expect(dot).toContain(`"${s.key}" [label=`);
        for (const e of edgesOf(s)) {
          const self = e.targets.length === 0 || e.targets.every((t) => t === s);
          expect(text).toContain(self ? `↻ ${e.event}` : e.event);
        }
      }
    });
  }

  it("leaves DOT it does not recognise alone", () => {
    expect(pageDot("not dot at all")).toBe("not dot at all");
  });

  it("sizes an SVG in px from its viewBox and prefixes its ids", () => {
    const svg = '<?xml version="1.0"?>\n<!-- c -->\n<svg width="100pt" height="50pt"\n viewBox="0.00 0.00 100.00 50.00"><g id="graph0"></g></svg>';
    expect(inlineSvg(svg, "d-x", 2)).toBe('<svg width="200" height="100"\n viewBox="0.00 0.00 100.00 50.00"><g id="d-x-graph0"></g></svg>');
  });

  it("lays out every machine with Graphviz at a width a screen holds, drawn at scale", async () => {
    const diagrams = await loadDiagrams();
    expect(diagrams.map((d) => d.id)).toEqual(machines.map((m) => m.id));
    for (const d of diagrams) {
      expect(d.svg, d.id).toBeDefined();
      const w = Number(/<svg width="(\d+)"/.exec(d.svg!)![1]);
      const vb = Number(/viewBox="[-\d.]+ [-\d.]+ ([\d.]+)/.exec(d.svg!)![1]);
      expect(w).toBe(Math.ceil(vb * SCALE));
      // A full-HD screen's width: the options machine (one record per option) is the widest.
      expect([d.id, w <= 1920]).toEqual([d.id, true]);
      for (const s of children(machines.find((m) => m.id === d.id)!.machine.root)) expect(d.svg).toContain(`<title>${s.key}</title>`);
      expect(d.svg).toContain(`id="d-${d.id}-`);
      expect(d.svg).not.toMatch(/<title>([^<]+)&#45;&gt;\1<\/title>/);
    }
  });
});
