// The status page's style sheet (page.ts puts it inline: no external resources).

export const CSS = `
:root { --muted: #5f6368; --line: #d7dbe0; --bg: #f6f7f9; --card: #fff; --bad: #b3261e; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #1f2328; background: var(--bg); }
header { background: #1f2a37; color: #f3f4f6; padding: .8em 1.5em; }
header h1 { font-size: 1.25em; margin: 0; font-weight: 600; }
header h1 .version { font-weight: 400; color: #b6c2cf; font-size: .85em; margin-left: .4em; }
header .address { font: 1.15em ui-monospace, monospace; margin: .25em 0; color: #fff; word-break: break-all; }
header .stack { color: #cfd8e3; }
header .stack b { color: #fff; font-weight: 600; }
header .facts { display: flex; flex-wrap: wrap; gap: .3em 1.6em; margin: .5em 0 0; }
header .facts div { display: flex; gap: .4em; align-items: baseline; }
header .facts dt { color: #9fb0c2; }
header .facts dd { margin: 0; font-variant-numeric: tabular-nums; font-weight: 600; }
header .facts dd.bad { color: #ffb4ab; }
#meta { color: #9fb0c2; font-size: .9em; margin: .3em 0 0; }
#meta.offline { color: #ffb4ab; font-weight: 600; }
main { padding: .2em 1.5em 2em; }
h2 { font-size: 1.05em; margin: 1.2em 0 .5em; color: #30363d; }
h2 .count { color: var(--muted); font-weight: 400; }
section.box { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: .6em .9em; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th { text-align: left; font-weight: 600; color: var(--muted); font-size: .85em; border-bottom: 1px solid var(--line); padding: .25em .6em; white-space: nowrap; }
td { padding: .3em .6em; border-bottom: 1px solid #eef0f3; white-space: nowrap; }
td.num, th.num { text-align: right; }
td.mono { font-family: ui-monospace, monospace; }
td.bad { color: var(--bad); font-weight: 600; }
td .default { color: var(--muted); font-style: italic; }
tr:last-child td { border-bottom: none; }
.empty { color: var(--muted); font-style: italic; padding: .3em .6em; }
.chip { display: inline-block; width: .8em; height: .8em; border-radius: 3px; margin-right: .45em; vertical-align: -1px; }
#activity { display: flex; align-items: center; gap: 1.2em; flex-wrap: wrap; }
#sparkline { background: #fbfcfd; border: 1px solid #eef0f3; border-radius: 4px; }
#sparkline rect.bar { fill: #4e79a7; }
#sparkline line.base { stroke: #c9d1da; }
#activity .axis { display: flex; justify-content: space-between; color: var(--muted); font-size: .78em; }
#activity .now { font-size: 1.6em; font-weight: 600; font-variant-numeric: tabular-nums; }
#activity .sub { color: var(--muted); }
.diagrams { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
figure.machine { margin: 0; background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: .6em .9em; max-width: 100%; }
figure.machine h3 { margin: 0; font-size: 1em; }
figure.machine h3 code { color: var(--muted); font-weight: 400; font-size: .9em; margin-left: .4em; }
figure.machine .summary { margin: .15em 0 .4em; color: var(--muted); font-size: .92em; }
/* Text wraps to the diagram's width instead of widening the card. */
figure.machine .summary, figure.machine .legend { width: 0; min-width: 100%; }
figure.machine .legend { list-style: none; padding: 0; margin: 0 0 .4em; display: flex; flex-wrap: wrap; gap: .2em 1.2em; }
figure.machine .legend li { white-space: nowrap; }
figure.machine .legend .st { font-family: ui-monospace, monospace; font-weight: 600; }
figure.machine .legend li.none { color: var(--muted); font-style: italic; }
.svgbox { overflow-x: auto; max-width: 100%; }
.svgbox svg { display: block; max-width: none; }
.svgbox pre { font-size: 12px; max-height: 24em; overflow: auto; }
/* The current state: amber with a dark outline; which instances are there, the badges say. */
g.node.current path, g.node.current polygon, g.node.current ellipse { fill: #ffd666; stroke: #7a4f00; stroke-width: 2.5px; }
g.badge text { font: 600 11px system-ui, sans-serif; fill: #fff; }
`;
