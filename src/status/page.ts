// The status page: one HTML document with every machine's diagram inlined
// (as <template>s, cloned per card) and a small script that listens to
// /events (server-sent events, one JSON StatusView per message) and marks
// the current state of each card: Graphviz draws each state as
// <g class="node"><title>STATE</title>...</g>, which gets class "current".
// No external resources: the page works offline.

import type { Diagram } from "./diagrams.js";

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const CSS = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 1em 2em; color: #222; background: #fafafa; }
h1 { font-size: 1.4em; margin: 0 0 .2em; }
h2 { font-size: 1.1em; margin: 1.4em 0 .4em; border-bottom: 1px solid #ccc; }
#meta { color: #555; }
#meta.offline { color: #b00020; }
.cards { display: flex; flex-wrap: wrap; gap: 1em; }
.card { background: #fff; border: 1px solid #ccc; border-radius: 6px; padding: .6em .8em; max-width: 100%; }
.card h3 { font-size: 1em; margin: 0 0 .3em; }
.card dl { display: grid; grid-template-columns: max-content 1fr; gap: 0 1em; margin: 0 0 .4em; }
.card dt { color: #666; } .card dd { margin: 0; font-family: ui-monospace, monospace; }
.card .state { font-weight: bold; }
.diagram svg { max-width: 100%; height: auto; }
.diagram pre { font-size: 11px; max-height: 20em; overflow: auto; }
g.node.current path, g.node.current ellipse, g.node.current polygon { fill: #ffd54f; stroke: #e65100; stroke-width: 2.5px; }
g.node.current text { font-weight: bold; }
.empty, .cards.none::after { color: #777; font-style: italic; }
.cards.none::after { content: "none"; }
`;

// Client side: plain DOM, no libraries. Text goes in with textContent only.
const SCRIPT = `
"use strict";
const cards = new Map();
const SECTIONS = ["server", "layers", "shared", "contexts", "connections"];

function makeCard(section, key, diagram) {
  const el = document.createElement("div");
  el.className = "card " + section;
  el.dataset.key = key;
  el.innerHTML = "<h3></h3><dl></dl><div class=diagram></div>";
  setDiagram(el, diagram);
  document.getElementById(section).appendChild(el);
  cards.set(key, el);
  return el;
}

function setDiagram(el, diagram) {
  if (el.dataset.diagram === diagram) return;
  el.dataset.diagram = diagram;
  const box = el.querySelector(".diagram");
  box.textContent = "";
  const t = document.getElementById("diagram-" + diagram);
  if (t) box.appendChild(t.content.cloneNode(true));
}

function fields(el, title, pairs, states) {
  el.querySelector("h3").textContent = title;
  const dl = el.querySelector("dl");
  dl.textContent = "";
  for (const [k, v] of pairs) {
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = k;
    dd.textContent = v === null || v === undefined ? "-" : String(v);
    if (k === "state") dd.className = "state";
    dl.append(dt, dd);
  }
  el.dataset.state = states.join(" ");
  for (const g of el.querySelectorAll("g.node")) {
    const t = g.querySelector("title");
    g.classList.toggle("current", !!t && states.includes(t.textContent));
  }
}

function render(v) {
  const seen = new Set();
  const put = (section, key, diagram, title, pairs, states) => {
    seen.add(key);
    const el = cards.get(key) || makeCard(section, key, diagram);
    setDiagram(el, diagram);
    fields(el, title, pairs, states.filter((s) => s !== null));
  };
  const s = v.server;
  put("server", "server", s.diagram, "server", [["state", s.state], ["address", s.address], ["connections", s.connections]], [s.state]);
  for (const l of v.layers) put("layers", "layer:" + l.name, l.diagram, l.kind + " " + l.name, [["state", l.state]], [l.state]);
  for (const h of v.shared) put("shared", "shared:" + h.key, h.diagram, h.key, [["state", h.state], ["refs", h.refs]], [h.state]);
  const counts = Object.entries(v.contexts.counts);
  put("contexts", "contexts", v.contexts.diagram, "open contexts",
    counts.length ? counts.map(([k, n]) => [k, n]) : [["none", 0]], counts.map(([k]) => k));
  for (const c of v.connections) {
    put("connections", "conn:" + c.id, c.diagram, c.id, [
      ["client", c.remote], ["export", c.exportName], ["phase", c.phase], ["state", c.state],
      ["in flight", c.inFlight], ["bytes read", c.bytesRead], ["bytes written", c.bytesWritten],
    ], [c.state]);
  }
  for (const [key, el] of cards) if (!seen.has(key)) { el.remove(); cards.delete(key); }
  for (const sec of SECTIONS) {
    const box = document.getElementById(sec);
    box.classList.toggle("none", box.children.length === 0);
  }
  document.getElementById("nconn").textContent = String(v.connections.length);
  const meta = document.getElementById("meta");
  meta.className = "";
  meta.textContent = "live, updated " + new Date().toLocaleTimeString();
}

const es = new EventSource("events");
es.onmessage = (m) => render(JSON.parse(m.data));
es.onerror = () => {
  const meta = document.getElementById("meta");
  meta.className = "offline";
  meta.textContent = "disconnected from the server (retrying)";
};
`;

function template(d: Diagram): string {
  const body = d.svg ?? (d.mermaid !== undefined ? `<pre>${esc(d.mermaid)}</pre>` : `<p class="empty">no diagram</p>`);
  return `<template id="diagram-${esc(d.id)}" title="${esc(d.summary)}">${body}</template>`;
}

export function pageHtml(diagrams: Diagram[], title = "nbdstate"): string {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>${esc(title)} status</title>
<style>${CSS}</style>
</head>
<body>
<h1>${esc(title)} status</h1>
<p id="meta">connecting...</p>
<h2>Server</h2>
<div class="cards" id="server"></div>
<h2>Connections (<span id="nconn">0</span>)</h2>
<div class="cards" id="connections"></div>
<h2>Backend layers (lifecycle)</h2>
<div class="cards" id="layers"></div>
<h2>Shared handles</h2>
<div class="cards" id="shared"></div>
<h2>Contexts</h2>
<div class="cards" id="contexts"></div>
${diagrams.map(template).join("\n")}
<script>${SCRIPT}</script>
</body>
</html>
`;
}
