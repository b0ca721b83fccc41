// The status page: one HTML document, no external resources (it works
// offline). The server writes the first StatusView into the page, so it
// is complete before any event arrives; a small script renders it and
// then every view from /events (server-sent events). Each machine's diagram
// appears once; every instance in that machine (the server, each
// connection, each layer, each layer's contexts, each shared handle) is a
// coloured badge on the state it is in. Graphviz draws each state as
// <g class="node"><title>STATE</title>...</g>: the script finds nodes by
// that title.

import type { Diagram } from "./diagrams.js";
import type { StatusView } from "./model.js";
import { CSS } from "./page-style.js";
import { SCRIPT } from "./page-script.js";

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** JSON safe inside <script>: no "</script>", no "<!--". */
const scriptJson = (v: unknown) => JSON.stringify(v).replace(/</g, "\\u003c").replace(/\u2028/g, "\\u2028").replace(/\u2029/g, "\\u2029");

function figure(d: Diagram): string {
  const body = d.svg ?? (d.mermaid !== undefined ? `<pre>${esc(d.mermaid)}</pre>` : `<p class="empty">no diagram</p>`);
  return `<figure class="machine" data-diagram="${esc(d.id)}" id="machine-${esc(d.id)}">
<h3>${esc(d.id)}<code>${esc(d.machine)}</code></h3>
<p class="summary">${esc(d.summary)}</p>
<ul class="legend"></ul>
<div class="svgbox">${body}</div>
</figure>`;
}

export interface PageParts {
  diagrams: Diagram[];
  title?: string;
}

/** The page, with `initial` (the view when it was asked for) written into it. */
export function pageHtml(parts: PageParts, initial: StatusView): string {
  const title = parts.title ?? "nbdstate";
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
<header>
<h1>nbdstate<span class="version" id="version"></span></h1>
<div class="address" id="address"></div>
<div class="stack" id="stack"></div>
<dl class="facts">
<div><dt>state</dt><dd id="f-state"></dd></div>
<div><dt>uptime</dt><dd id="f-uptime"></dd></div>
<div><dt>connections</dt><dd id="f-conns"></dd></div>
<div><dt>requests</dt><dd id="f-requests"></dd></div>
<div><dt>errors</dt><dd id="f-errors"></dd></div>
<div><dt>read</dt><dd id="f-read"></dd></div>
<div><dt>written</dt><dd id="f-written"></dd></div>
</dl>
<p id="meta">connecting…</p>
</header>
<main>
<h2>Activity</h2>
<section class="box" id="activity">
<div class="spark"><svg id="sparkline" width="480" height="56" role="img" aria-label="activity per second, last minute"></svg>
<div class="axis"><span>60 s ago</span><span>now</span></div></div>
<div><div class="now" id="rate-now"></div><div class="sub" id="rate-sub"></div></div>
</section>
<h2>Connections <span class="count">(<span id="nconn">0</span>)</span></h2>
<section class="box">
<table id="connections"><thead><tr>
<th>id</th><th>client</th><th>export</th><th>machine: state</th><th class="num">in flight</th>
<th class="num">read/s</th><th class="num">write/s</th><th class="num">read</th><th class="num">written</th>
<th class="num">requests</th><th class="num">errors</th><th class="num">age</th>
</tr></thead><tbody></tbody></table>
<p class="empty" id="connections-empty">no connections</p>
</section>
<h2>Layers</h2>
<section class="box">
<table id="layers"><thead><tr><th>layer</th><th>kind</th><th>lifecycle</th><th>contexts (this layer's own)</th></tr></thead><tbody></tbody></table>
<table id="shared"><thead><tr><th>shared handle of</th><th>access</th><th>export</th><th>state</th><th class="num">references</th></tr></thead><tbody></tbody></table>
<p class="empty" id="shared-empty">no shared handles</p>
</section>
<h2>State machines</h2>
<div class="diagrams">
${parts.diagrams.map(figure).join("\n")}
</div>
</main>
<script type="application/json" id="initial">${scriptJson(initial)}</script>
<script>${SCRIPT}</script>
</body>
</html>
`;
}
