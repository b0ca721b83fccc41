// The status page's script, put inline by page.ts. Client side: plain DOM,
// no libraries; text goes in with textContent only.
export const SCRIPT = String.raw`
"use strict";
const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#9c755f", "#76b7b2", "#d37295"];
const SVGNS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

function bytes(n) {
  if (n < 1024) return Math.round(n) + " B";
  const u = ["KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = -1;
  do { n /= 1024; i++; } while (n >= 1024 && i < u.length - 1);
  return (n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2)) + " " + u[i];
}
const rate = (n) => bytes(n) + "/s";
function count(n) {
  if (n === null || n === undefined) return "–";
  return n >= 1e6 ? (n / 1e6).toFixed(1) + "M" : n >= 1e4 ? (n / 1e3).toFixed(1) + "k" : String(n);
}
function duration(s) {
  s = Math.max(0, Math.floor(s));
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60, x = s % 60;
  const p = (v) => String(v).padStart(2, "0");
  if (d) return d + "d " + p(h) + "h";
  if (h) return h + "h " + p(m) + "m";
  if (m) return m + "m " + p(x) + "s";
  return x + "s";
}
const exportText = (name) => (name === null ? "–" : name === "" ? "(default)" : name);
/** conn-N -> a colour that stays the same for the connection's life. */
function connColor(id) {
  const n = Number(/(\d+)$/.exec(id)?.[1] ?? 0);
  return PALETTE[(n + PALETTE.length - 1) % PALETTE.length];
}
const chip = (color) => {
  const c = el("span", "chip");
  c.style.background = color;
  return c;
};

// ---- header and tables

let view = null;
let received = 0;

function renderHeader(v) {
  $("version").textContent = v.version ? "v" + v.version : "";
  $("address").textContent = v.server.display || v.server.address || "–";
  const stack = $("stack");
  stack.textContent = "";
  const filters = v.layers.filter((l) => l.kind === "filter").map((l) => l.name);
  const plugin = v.layers.find((l) => l.kind === "plugin");
  stack.append("plugin ");
  stack.append(el("b", "", plugin ? plugin.name : "?"));
  if (filters.length) {
    stack.append(", filters (outermost first) ");
    stack.append(el("b", "", filters.join(" → ")));
  } else stack.append(", no filters");
  $("f-state").textContent = v.server.state ?? "–";
  $("f-conns").textContent = v.server.connections + " now, " + v.totals.connections + " since start";
  $("f-requests").textContent = count(v.totals.requests);
  const errs = $("f-errors");
  errs.textContent = count(v.totals.errors);
  errs.classList.toggle("bad", (v.totals.errors ?? 0) > 0);
  $("f-read").textContent = bytes(v.totals.bytesRead);
  $("f-written").textContent = bytes(v.totals.bytesWritten);
  tick();
}

/** Uptime and age tick between updates: the view's seconds plus the time since it arrived. */
function tick() {
  if (!view) return;
  const extra = (Date.now() - received) / 1000;
  $("f-uptime").textContent = duration(view.uptime + extra);
  for (const tr of document.querySelectorAll("#connections tbody tr[data-age]")) {
    tr.querySelector(".age").textContent = duration(Number(tr.dataset.age) + extra);
  }
}

const CONN_COLUMNS = ["id", "client", "export", "state", "inflight", "readRate", "writeRate", "read", "written", "requests", "errors", "age"];

function renderConnections(v) {
  const body = $("connections").querySelector("tbody");
  const rows = new Map([...body.querySelectorAll("tr[data-id]")].map((tr) => [tr.dataset.id, tr]));
  $("nconn").textContent = String(v.connections.length);
  $("connections-empty").hidden = v.connections.length > 0;
  $("connections").hidden = v.connections.length === 0;
  for (const c of v.connections) {
    let tr = rows.get(c.id);
    rows.delete(c.id);
    if (!tr) {
      tr = el("tr");
      tr.dataset.id = c.id;
      for (const k of CONN_COLUMNS) {
        const td = el("td", k);
        if (["inflight", "readRate", "writeRate", "read", "written", "requests", "errors", "age"].includes(k)) td.classList.add("num");
        if (k === "id" || k === "client" || k === "export") td.classList.add("mono");
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
    const cell = (k) => tr.querySelector("td." + k);
    const id = cell("id");
    id.textContent = "";
    id.append(chip(connColor(c.id)), c.id);
    cell("client").textContent = c.remote;
    const ex = cell("export");
    ex.textContent = "";
    if (c.exportName === "") ex.appendChild(el("span", "default", "(default)"));
    else ex.textContent = exportText(c.exportName);
    cell("state").textContent = c.diagram + ": " + (c.state ?? c.phase);
    cell("inflight").textContent = String(c.inFlight);
    cell("readRate").textContent = rate(c.readRate);
    cell("writeRate").textContent = rate(c.writeRate);
    cell("read").textContent = bytes(c.bytesRead);
    cell("written").textContent = bytes(c.bytesWritten);
    cell("requests").textContent = count(c.requests);
    cell("requests").title = c.requests === null ? "this server does not count requests" : (c.requestRate ?? 0) + " requests/s";
    cell("errors").textContent = count(c.errors);
    cell("errors").classList.toggle("bad", (c.errors ?? 0) > 0);
    tr.dataset.age = String(c.age);
    tr.dataset.state = c.state ?? "";
    tr.dataset.diagram = c.diagram;
  }
  for (const tr of rows.values()) tr.remove();
}

const layerColor = (i) => PALETTE[i % PALETTE.length];

/** A shared handle's key, LAYER:rw|ro[+tls]:EXPORT (src/backend/shared-contexts.ts), in parts. */
function sharedKey(key) {
  const m = /^([^:]*):([^:]*):([\s\S]*)$/.exec(key);
  if (!m) return { layer: key, access: "", exportName: "", label: key };
  const access = m[2].replace("ro", "read-only").replace("rw", "read-write").replace("+tls", ", TLS");
  return { layer: m[1], access, exportName: m[3], label: m[1] + " " + exportText(m[3]) };
}

function renderLayers(v) {
  const body = $("layers").querySelector("tbody");
  body.textContent = "";
  v.layers.forEach((l, i) => {
    const tr = el("tr");
    tr.dataset.layer = l.name;
    const name = el("td", "mono");
    name.append(chip(layerColor(i)), l.name);
    const ctx = Object.entries(l.contexts).map(([s, n]) => n + " " + s).join(", ");
    tr.append(name, el("td", "", l.kind), el("td", "mono state", l.state ?? "–"), el("td", "contexts", ctx || "none"));
    body.appendChild(tr);
  });
  const sh = $("shared").querySelector("tbody");
  sh.textContent = "";
  $("shared-empty").hidden = v.shared.length > 0;
  $("shared").hidden = v.shared.length === 0;
  v.shared.forEach((h, i) => {
    const k = sharedKey(h.key);
    const tr = el("tr");
    tr.dataset.key = h.key;
    const layer = el("td", "mono");
    layer.append(chip(layerColor(i)), k.layer);
    const ex = el("td", "mono");
    if (k.exportName === "") ex.appendChild(el("span", "default", "(default)"));
    else ex.textContent = k.exportName;
    tr.append(layer, el("td", "", k.access), ex, el("td", "mono", h.state ?? "–"), el("td", "num", String(h.refs)));
    sh.appendChild(tr);
  });
}

// ---- sparkline

function renderActivity(v) {
  const a = v.activity;
  const svg = $("sparkline");
  const W = Number(svg.getAttribute("width")), H = Number(svg.getAttribute("height"));
  const slots = 60, bw = W / slots;
  const pts = a.perSecond.slice(-slots);
  const max = Math.max(1, ...pts);
  svg.textContent = "";
  pts.forEach((p, i) => {
    const h = p > 0 ? Math.max(1.5, (p / max) * (H - 4)) : 0;
    const r = document.createElementNS(SVGNS, "rect");
    r.setAttribute("class", "bar");
    r.setAttribute("x", String(W - (pts.length - i) * bw + 0.5));
    r.setAttribute("y", String(H - 1 - h));
    r.setAttribute("width", String(Math.max(1, bw - 1)));
    r.setAttribute("height", String(h));
    const t = document.createElementNS(SVGNS, "title");
    t.textContent = (pts.length - i) + " s ago: " + fmtRate(a.unit, p);
    r.appendChild(t);
    svg.appendChild(r);
  });
  const base = document.createElementNS(SVGNS, "line");
  base.setAttribute("class", "base");
  base.setAttribute("x1", "0"); base.setAttribute("x2", String(W));
  base.setAttribute("y1", String(H - 0.5)); base.setAttribute("y2", String(H - 0.5));
  svg.appendChild(base);
  svg.dataset.points = String(pts.length);
  svg.dataset.max = String(Math.max(0, ...pts));
  svg.dataset.unit = a.unit;
  const last = pts.length ? pts[pts.length - 1] : 0;
  $("rate-now").textContent = fmtRate(a.unit, last);
  $("rate-sub").textContent = (a.unit === "requests" ? "requests" : "bytes read + written") +
    " per second, server-wide, last " + Math.min(slots, pts.length) + " s; peak " + fmtRate(a.unit, Math.max(0, ...pts));
}
const fmtRate = (unit, p) => (unit === "requests" ? (p >= 100 ? p.toFixed(0) : p.toFixed(1)) + " req/s" : rate(p));

// ---- diagrams: one per machine, instances as badges on their states

/** A state value ("a.b", "a|b" for parallel regions) -> the node titles Graphviz gave it ("a__b"). */
const nodeTitles = (state) => state.split("|").map((s) => s.replace(/\./g, "__"));

function marksOf(v) {
  const m = {};
  const add = (diagram, state, label, color, detail) => {
    if (state === null || state === undefined) return;
    (m[diagram] ??= []).push({ state, label, color, detail });
  };
  add(v.server.diagram, v.server.state, "server", PALETTE[0], "the server");
  for (const c of v.connections) add(c.diagram, c.state, c.id, connColor(c.id), c.remote);
  v.layers.forEach((l, i) => {
    add(l.diagram, l.state, l.name, layerColor(i), l.kind);
    for (const [s, n] of Object.entries(l.contexts)) add("context", s, l.name + " ×" + n, layerColor(i), n + " context" + (n === 1 ? "" : "s") + " of " + l.name);
  });
  v.shared.forEach((h, i) => add(h.diagram, h.state, sharedKey(h.key).label + " · " + h.refs + " ref" + (h.refs === 1 ? "" : "s"), layerColor(i), "shared handle"));
  return m;
}

const MAX_BADGES = 6;
const MAX_LEGEND = 16;

/** Overlap area of two boxes {x, y, width, height}. */
function overlap(a, b) {
  const w = Math.min(a.x + a.width, b.x + b.width) - Math.max(a.x, b.x);
  const h = Math.min(a.y + a.height, b.y + b.height) - Math.max(a.y, b.y);
  return w > 0 && h > 0 ? w * h : 0;
}

/**
 * Badges for one node: rows of coloured labels (the rest as "+N"), placed
 * above, below, right or left of the node, wherever they cover the least
 * text and fewest states, kept inside the drawing.
 */
function placeBadges(root, node, ms, obstacles, bounds) {
  const shown = ms.length > MAX_BADGES ? ms.slice(0, MAX_BADGES - 1) : ms;
  const items = shown.map((k) => ({ text: k.label, color: k.color }));
  if (ms.length > shown.length) items.push({ text: "+" + (ms.length - shown.length), color: "#5f6368" });
  const group = document.createElementNS(SVGNS, "g");
  group.setAttribute("class", "badge");
  root.appendChild(group);
  for (const it of items) {
    const t = document.createElementNS(SVGNS, "text");
    t.textContent = it.text;
    group.appendChild(t);
    it.t = t;
    it.w = t.getComputedTextLength() + 8;
  }
  const box = node.getBBox();
  const H = 14, GAP = 3;
  /** Items in rows no wider than maxRow (0: one per row). */
  const wrap = (maxRow) => {
    const rows = [[]];
    let rowW = 0;
    for (const it of items) {
      if (rows[rows.length - 1].length && rowW + it.w > maxRow) { rows.push([]); rowW = 0; }
      rows[rows.length - 1].push(it);
      rowW += it.w + GAP;
    }
    const widths = rows.map((r) => r.reduce((a, it) => a + it.w + GAP, -GAP));
    return { rows, widths, W: Math.max(...widths), BH: rows.length * (H + GAP) - GAP };
  };
  const wide = wrap(Math.max(box.width, 160)), tall = wrap(0);
  const cx = box.x + box.width / 2, cy = box.y + box.height / 2;
  const candidates = [
    { l: wide, x: cx - wide.W / 2, y: box.y - wide.BH - 3 },
    { l: wide, x: cx - wide.W / 2, y: box.y + box.height + 3 },
    { l: tall, x: box.x + box.width + 4, y: cy - tall.BH / 2 },
    { l: tall, x: box.x - tall.W - 4, y: cy - tall.BH / 2 },
  ].map((c) => ({
    l: c.l,
    x: Math.min(Math.max(c.x, bounds.x + 1), bounds.x + bounds.width - c.l.W - 1),
    y: Math.min(Math.max(c.y, bounds.y + 1), bounds.y + bounds.height - c.l.BH - 1),
  }));
  let best = candidates[0], bestScore = Infinity;
  for (const c of candidates) {
    const r = { x: c.x, y: c.y, width: c.l.W, height: c.l.BH };
    const score = obstacles.reduce((a, o) => a + overlap(r, o) * o.weight, 0);
    if (score < bestScore - 0.5) { best = c; bestScore = score; }
  }
  const { rows, widths, W, BH } = best.l;
  rows.forEach((row, i) => {
    let x = best.x + (W - widths[i]) / 2;
    const y = best.y + i * (H + GAP);
    for (const it of row) {
      const r = document.createElementNS(SVGNS, "rect");
      r.setAttribute("x", String(x)); r.setAttribute("y", String(y));
      r.setAttribute("width", String(it.w)); r.setAttribute("height", String(H)); r.setAttribute("rx", "4");
      r.setAttribute("fill", it.color);
      group.insertBefore(r, it.t);
      it.t.setAttribute("x", String(x + 4)); it.t.setAttribute("y", String(y + H - 3.5));
      x += it.w + GAP;
    }
  });
  obstacles.push({ x: best.x, y: best.y, width: W, height: BH, weight: 4 });
}

function markDiagram(fig, marks) {
  const svg = fig.querySelector("svg");
  const legend = fig.querySelector(".legend");
  legend.textContent = "";
  if (!marks.length) legend.appendChild(el("li", "none", "nothing in this machine now"));
  // Many instances (a busy server): the first few, then how many more (the tables list them all).
  for (const k of marks.slice(0, MAX_LEGEND)) {
    const li = el("li");
    li.append(chip(k.color), k.label + " ");
    li.appendChild(el("span", "st", k.state));
    legend.appendChild(li);
  }
  if (marks.length > MAX_LEGEND) legend.appendChild(el("li", "none", "and " + (marks.length - MAX_LEGEND) + " more"));
  fig.dataset.states = [...new Set(marks.map((k) => k.state))].join(" ");
  if (!svg) return;
  for (const b of svg.querySelectorAll("g.badge")) b.remove();
  const byNode = new Map();
  for (const g of svg.querySelectorAll("g.node")) {
    g.classList.remove("current");
    const t = g.querySelector(":scope > title");
    if (t) byNode.set(t.textContent, { g, marks: [] });
  }
  for (const k of marks) for (const t of nodeTitles(k.state)) byNode.get(t)?.marks.push(k);
  const root = svg.querySelector("g.graph") || svg;
  const marked = [...byNode.values()].filter((n) => n.marks.length);
  if (!marked.length) return;
  // What badges should not cover: labels and states most, edges' lines a little.
  const obstacles = [];
  for (const t of svg.querySelectorAll("g.node text, g.edge text")) obstacles.push(Object.assign(t.getBBox(), { weight: 3 }));
  for (const g of svg.querySelectorAll("g.node")) obstacles.push(Object.assign(g.getBBox(), { weight: 2 }));
  // The whole drawing (padding included) in the graph's coordinates: the viewBox less Graphviz's translate.
  const vb = svg.viewBox.baseVal;
  const tr = /translate\(([-\d.]+)[ ,]+([-\d.]+)\)/.exec(root.getAttribute("transform") || "");
  const bounds = vb && vb.width ? { x: vb.x - (tr ? Number(tr[1]) : 0), y: vb.y - (tr ? Number(tr[2]) : 0), width: vb.width, height: vb.height } : root.getBBox();
  for (const { g, marks: ms } of marked) {
    g.classList.add("current");
    placeBadges(root, g, ms, obstacles, bounds);
  }
}

function renderDiagrams(v) {
  const marks = marksOf(v);
  for (const fig of document.querySelectorAll("figure.machine")) {
    // Redrawn only when what it shows changed: badges stay put between updates.
    const ms = marks[fig.dataset.diagram] ?? [];
    const sig = JSON.stringify(ms);
    if (fig.dataset.sig === sig) continue;
    fig.dataset.sig = sig;
    markDiagram(fig, ms);
  }
}

function render(v) {
  view = v;
  received = Date.now();
  renderHeader(v);
  renderActivity(v);
  renderConnections(v);
  renderLayers(v);
  renderDiagrams(v);
}

render(JSON.parse($("initial").textContent));
$("meta").textContent = "snapshot at page load; connecting for live updates…";
setInterval(tick, 1000);
const es = new EventSource("events");
es.onmessage = (m) => {
  render(JSON.parse(m.data));
  const meta = $("meta");
  meta.className = "";
  meta.textContent = "live · updated " + new Date().toLocaleTimeString();
};
es.onerror = () => {
  const meta = $("meta");
  meta.className = "offline";
  meta.textContent = "disconnected from the server (retrying); showing the last update";
};
`;
