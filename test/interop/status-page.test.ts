// --status-page in headless Chromium, checked as a person would read it:
// a real server (a plugin under two filters) and two real libnbd clients,
// one copying data in a loop and one idle. The page shows the server's
// address, version and stack, one row per connection (conn-N, client
// address, "(default)" export, throughput while one copies), a sparkline
// with data, and each machine's diagram exactly once, legibly sized, with
// every instance's current state marked. A screenshot is taken into the
// test's temp dir (STATUS_PAGE_SCREENSHOT=FILE keeps a copy to look at).
// Chromium is Debian's (`chromium`), driven by playwright-core.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chromium, type Browser, type Page } from "playwright-core";
import { spawn, type ChildProcess } from "node:child_process";
import { copyFileSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { PYTHON, requirePythonLibnbd, requireTool } from "../helpers/tools.js";
import {
  REPO_ROOT,
  canConnect,
  freePort,
  isNbdkit,
  makeTmpDir,
  removeTmpDir,
  startServer,
  startTcpServer,
  waitFor,
  type RunningServer,
} from "../helpers/server.js";

const CHROMIUM = "/usr/bin/chromium";
const ok = !isNbdkit && requireTool(CHROMIUM, "chromium") && requirePythonLibnbd();

const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const VERSION = (JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as { version: string }).version;

/** A libnbd client: connects, says "ready", then copies 64 KiB in and out in a loop (or idles) until STOP exists. */
const CLIENT = String.raw`
import nbd, os, sys, time
uri, stop, busy = sys.argv[1], sys.argv[2], sys.argv[3] == "busy"
h = nbd.NBD()
h.connect_uri(uri)
print("ready", flush=True)
buf = b"\xab" * 65536
end = time.time() + 25
while time.time() < end and not os.path.exists(stop):
    if busy:
        h.pwrite(buf, 0)
        h.pread(65536, 0)
        time.sleep(0.01)
    else:
        time.sleep(0.05)
h.shutdown()
`;

function startClient(uri: string, stop: string, busy: boolean): { child: ChildProcess; ready: Promise<void> } {
  const child = spawn(PYTHON, ["-c", CLIENT, uri, stop, busy ? "busy" : "idle"], { stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  child.stderr!.on("data", (b: Buffer) => (err += b.toString()));
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout!.on("data", (b: Buffer) => {
      if (b.toString().includes("ready")) resolve();
    });
    child.once("exit", (code) => reject(new Error(`client exited (${code}): ${err}`)));
  });
  return { child, ready };
}

/** Visible text of the connection row for `id`, cell by cell (column header -> text). */
async function row(page: Page, id: string): Promise<Record<string, string>> {
  return page.evaluate((rid) => {
    const heads = [...document.querySelectorAll("#connections thead th")].map((th) => (th as HTMLElement).innerText.trim());
    const tr = document.querySelector(`#connections tbody tr[data-id="${rid}"]`);
    const cells = [...(tr?.querySelectorAll("td") ?? [])].map((td) => (td as HTMLElement).innerText.trim());
    return Object.fromEntries(heads.map((h, i) => [h, cells[i] ?? ""]));
  }, id);
}

/** Per diagram: how many figures, the states marked current, the badge texts, rendered size, smallest text. */
async function diagrams(page: Page) {
  return page.evaluate(() => {
    const out: Record<string, { figures: number; svgs: number; current: string[]; badges: string[]; width: number; minText: number; overlaps: number }> = {};
    for (const fig of document.querySelectorAll("figure.machine")) {
      const id = (fig as HTMLElement).dataset.diagram!;
      const svg = fig.querySelector("svg");
      const r = svg?.getBoundingClientRect();
      const texts = [...(svg?.querySelectorAll("g.node text, g.edge text") ?? [])].map((t) => t.getBoundingClientRect());
      // Labels that a line crosses or another label covers, in the SVG's own coordinates.
      const labels = [...(svg?.querySelectorAll<SVGGraphicsElement>("g.edge text") ?? [])].map((t) => {
        const r = t.getBBox();
        return { x: r.x, y: r.y, right: r.x + r.width, bottom: r.y + r.height, width: r.width, height: r.height };
      });
      const points: DOMPoint[] = [];
      for (const p of svg?.querySelectorAll<SVGPathElement>("g.edge path") ?? []) {
        const len = p.getTotalLength();
        for (let at = 0; at <= len; at += 2) points.push(p.getPointAtLength(at));
      }
      let overlaps = 0;
      labels.forEach((b, i) => {
        const inset = 1.5;
        const crossed = points.some((q) => q.x > b.x + inset && q.x < b.right - inset && q.y > b.y + inset && q.y < b.bottom - inset);
        const covered = labels.some((c, j) => {
          if (j === i) return false;
          const w = Math.min(b.right, c.right) - Math.max(b.x, c.x);
          const h = Math.min(b.bottom, c.bottom) - Math.max(b.y, c.y);
          return w > 0 && h > 0 && w * h > Math.min(b.width * b.height, c.width * c.height) / 3;
        });
        if (crossed || covered) overlaps++;
      });
      const prev = out[id];
      out[id] = {
        figures: (prev?.figures ?? 0) + 1,
        svgs: (prev?.svgs ?? 0) + fig.querySelectorAll("svg").length,
        current: [...fig.querySelectorAll("g.node.current > title")].map((t) => t.textContent ?? ""),
        badges: [...fig.querySelectorAll("g.badge text")].map((t) => t.textContent ?? ""),
        width: r?.width ?? 0,
        minText: Math.min(...texts.map((t) => t.height)),
        overlaps,
      };
    }
    return out;
  });
}

describe.skipIf(!ok)("--status-page in headless Chromium", () => {
  let srv: RunningServer;
  let port: number;
  let browser: Browser;
  let page: Page;
  let tmp: string;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    tmp = makeTmpDir("nbdstate-status-page-");
    port = await freePort();
    srv = await startTcpServer([`--status-page=127.0.0.1:${port}`, "--filter=nofilter", "--filter=shared", "memory", "8M"]);
    expect(await waitFor(() => canConnect({ host: "127.0.0.1", port }), 10_000)).toBe(true);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 60_000 });
    page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    page.on("pageerror", (e) => pageErrors.push(String(e)));
    page.on("console", (m) => {
      if (m.type() === "error") pageErrors.push(m.text());
    });
  }, 90_000);

  afterAll(async () => {
    await browser?.close();
    await srv?.stop();
    if (tmp) removeTmpDir(tmp);
  });

  it("is complete at load, before any event: header, layers, each diagram once with its state marked", async () => {
    // No event stream at all: what shows is the snapshot written into the page.
    const p = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    const errors: string[] = [];
    p.on("pageerror", (e) => errors.push(String(e)));
    await p.route("**/events", (r) => r.abort());
    await p.goto(`http://127.0.0.1:${port}/`);
    const text = await p.innerText("body");
    expect(text).toContain(`nbd://127.0.0.1:${srv.port}`);
    expect(await p.title()).toBe(`nbdstate nbd://127.0.0.1:${srv.port} status`);
    expect(text).toContain(`v${VERSION}`);
    expect(await p.innerText("#stack")).toBe("plugin memory, filters (outermost first) nofilter → shared");
    expect(await p.innerText("#f-state")).toBe("LISTENING");
    expect(await p.innerText("#f-uptime")).toMatch(/^\d+s$|^\d+m \d\ds$/);
    expect(await p.innerText("#connections-empty")).toBe("no connections");
    const d = await diagrams(p);
    expect(Object.keys(d).sort()).toEqual(["backend-lifecycle", "connection", "context", "handshake", "options", "server", "shared-handle", "transmission"]);
    for (const [id, x] of Object.entries(d)) {
      expect([id, x.figures, x.svgs]).toEqual([id, 1, 1]);
    }
    expect(d.server!.current).toEqual(["LISTENING"]);
    expect(d["backend-lifecycle"]!.current).toEqual(["running"]);
    expect(d["backend-lifecycle"]!.badges).toEqual(["nofilter", "shared", "memory"]);
    await p.close();
    expect(errors).toEqual([]);
  }, 30_000);

  it("shows two real clients, one copying: rows, throughput, sparkline, states marked once per diagram", async () => {
    await page.goto(`http://127.0.0.1:${port}/`);
    await page.waitForSelector("#meta:text('live')", { timeout: 10_000 });
    // The test harness's readiness probe was a connection too.
    const before = Number(/(\d+) since start/.exec(await page.innerText("#f-conns"))![1]);
    const stop = join(tmp, "stop");
    const busy = startClient(srv.uri, stop, true);
    const idle = startClient(srv.uri, stop, false);
    try {
      await Promise.all([busy.ready, idle.ready]);
      await page.waitForFunction(() => document.querySelectorAll('#connections tbody tr[data-state="SERVING"]').length === 2, undefined, { timeout: 10_000 });
      const ids = await page.$$eval("#connections tbody tr", (trs) => trs.map((t) => (t as HTMLElement).dataset.id!));
      expect(ids).toHaveLength(2);
      for (const id of ids) expect(id).toMatch(/^conn-\d+$/);
      const rows = await Promise.all(ids.map((id) => row(page, id)));
      for (const r of rows) {
        expect(r.client).toMatch(/^127\.0\.0\.1:\d+$/);
        expect(r.export).toBe("(default)");
        expect(r["machine: state"]).toBe("transmission: SERVING");
      }
      expect(rows[0]!.client).not.toBe(rows[1]!.client);
      expect(await page.innerText("#nconn")).toBe("2");

      // The copying client's throughput (sampled once a second) and the sparkline.
      expect(
        await waitFor(async () => {
          const rs = await Promise.all(ids.map((id) => row(page, id)));
          return rs.some((r) => r["read/s"] !== "0 B/s" && r["write/s"] !== "0 B/s");
        }, 10_000),
      ).toBe(true);
      expect(
        await waitFor(async () => {
          const s = await page.$eval("#sparkline", (e) => ({ points: Number((e as SVGElement).dataset.points), max: Number((e as SVGElement).dataset.max) }));
          return s.points >= 2 && s.max > 0;
        }, 10_000),
      ).toBe(true);
      expect(await page.locator("#sparkline rect.bar").count()).toBeGreaterThanOrEqual(2);
      // Request and error counters, where the core counts them ("–" where it does not).
      const json = (await (await fetch(`http://127.0.0.1:${port}/status.json`)).json()) as { connections: { id: string; requests: number | null; errors: number | null }[] };
      for (const c of json.connections) {
        const r = await row(page, c.id);
        if (c.requests === null) expect(r.requests).toBe("–");
        else expect(r.requests).toMatch(/^\d+(\.\d)?[kM]?$/);
        if (c.errors === null) expect(r.errors).toBe("–");
        else expect(r.errors).toBe("0");
      }
      const unit = await page.$eval("#sparkline", (e) => (e as SVGElement).dataset.unit);
      expect(unit).toBe(json.connections.some((c) => c.requests !== null) ? "requests" : "bytes");
      expect(await page.innerText("#rate-now")).toMatch(/\/s$/);
      const written = await page.innerText("#f-written");
      expect(written).not.toBe("0 B");

      // Contexts per layer: each connection has its own nofilter and shared context; memory has one, shared.
      const ctx = await page.$$eval("#layers tbody tr", (trs) =>
        Object.fromEntries(trs.map((t) => [(t as HTMLElement).dataset.layer!, (t.querySelector(".contexts") as HTMLElement).innerText])),
      );
      expect(ctx).toEqual({ nofilter: "2 open", shared: "2 open", memory: "1 open" });
      expect(await page.$$eval("#shared tbody tr", (trs) => trs.map((t) => (t as HTMLElement).innerText.split("\t").map((x) => x.trim())))).toEqual([
        ["memory", "read-write", "(default)", "open", "2"],
      ]);

      // What a person sees, for a look (STATUS_PAGE_SCREENSHOT) and for its size.
      const shot = join(tmp, "status-page.png");
      await page.screenshot({ path: shot, fullPage: true });
      expect(statSync(shot).size).toBeGreaterThan(10_000);
      if (process.env.STATUS_PAGE_SCREENSHOT) copyFileSync(shot, process.env.STATUS_PAGE_SCREENSHOT);

      // Each diagram once; the connections' state marked in transmission, the layers' in the lifecycle.
      const d = await diagrams(page);
      for (const [id, x] of Object.entries(d)) expect([id, x.figures, x.svgs]).toEqual([id, 1, 1]);
      expect(d.transmission!.current).toEqual(["SERVING"]);
      expect([...d.transmission!.badges].sort()).toEqual([...ids].sort());
      expect(d["backend-lifecycle"]!.current).toEqual(["running"]);
      expect(d.context!.current).toEqual(["open"]);
      expect(d.context!.badges).toEqual(["nofilter ×2", "shared ×2", "memory ×1"]);
      expect(d["shared-handle"]!.current).toEqual(["open"]);
      expect(d["shared-handle"]!.badges).toEqual(["memory (default) · 2 refs"]);
      // Legible: drawn at size (the shared-handle diagram is wide), text at least 11 px, no label on another.
      expect(d["shared-handle"]!.width).toBeGreaterThanOrEqual(900);
      for (const [id, x] of Object.entries(d)) {
        expect([id, x.minText >= 11]).toEqual([id, true]);
        expect([id, x.overlaps]).toEqual([id, 0]);
      }

    } finally {
      writeFileSync(stop, "");
      for (const c of [busy.child, idle.child]) {
        if (c.exitCode === null) await new Promise((r) => c.once("exit", r));
      }
    }

    await page.waitForFunction(() => document.querySelectorAll("#connections tbody tr").length === 0, undefined, { timeout: 10_000 });
    expect(await page.innerText("#nconn")).toBe("0");
    expect(await page.innerText("#f-conns")).toBe(`0 now, ${before + 2} since start`);
    const d = await diagrams(page);
    expect(d.transmission!.current).toEqual([]);
    expect(d.context!.badges).toEqual(["memory ×1"]);
    expect(pageErrors).toEqual([]);
  }, 30_000);

  it("marks a connection held in the handshake, then in option haggling", async () => {
    await page.goto(`http://127.0.0.1:${port}/`);
    const sock = connect({ host: "127.0.0.1", port: srv.port! });
    try {
      // The greeting (NBDMAGIC, IHAVEOPT, handshake flags): 18 bytes.
      await new Promise<void>((resolve, reject) => {
        let n = 0;
        sock.on("data", (b: Buffer) => {
          n += b.length;
          if (n >= 18) resolve();
        });
        sock.once("error", reject);
      });
      await page.waitForSelector('#connections tr[data-diagram="handshake"][data-state="AWAIT_CLIENT_FLAGS"]', { timeout: 10_000 });
      let d = await diagrams(page);
      expect(d.handshake!.current).toEqual(["AWAIT_CLIENT_FLAGS"]);
      expect(d.handshake!.badges).toHaveLength(1);
      expect(d.handshake!.badges[0]).toMatch(/^conn-\d+$/);
      expect(d.options!.current).toEqual([]);
      // Client flags FIXED_NEWSTYLE | NO_ZEROES: on to the options machine.
      sock.write(Buffer.from([0, 0, 0, 3]));
      await page.waitForSelector('#connections tr[data-diagram="options"][data-state="AWAIT_OPTION"]', { timeout: 10_000 });
      d = await diagrams(page);
      expect(d.options!.current).toEqual(["AWAIT_OPTION"]);
      expect(d.handshake!.current).toEqual([]);
      const id = d.options!.badges[0]!;
      expect((await row(page, id)).export).toBe("–");
    } finally {
      sock.destroy();
    }
    await page.waitForFunction(() => document.querySelectorAll("#connections tbody tr").length === 0, undefined, { timeout: 10_000 });
    expect(pageErrors).toEqual([]);
  }, 30_000);

  it("serves one view as JSON (also at the printed URL + /status.json) and the diagrams as SVG, nothing else", async () => {
    const base = `http://127.0.0.1:${port}/`;
    for (const url of [`${base}status.json`, `${base}/status.json`]) {
      const view = (await (await fetch(url)).json()) as {
        version: string;
        server: { state: string; address: string; display: string };
        layers: { name: string; state: string; contexts: Record<string, number> }[];
        connections: unknown[];
        totals: { connections: number };
        activity: { unit: string; perSecond: number[] };
      };
      expect(view.version).toBe(VERSION);
      expect(view.server.state).toBe("LISTENING");
      expect(view.server.display).toBe(`nbd://127.0.0.1:${srv.port}`);
      expect(view.layers.map((l) => [l.name, l.state])).toEqual([["nofilter", "running"], ["shared", "running"], ["memory", "running"]]);
      expect(view.layers[2]!.contexts).toEqual({ open: 1 });
      expect(view.connections).toEqual([]);
      expect(view.totals.connections).toBeGreaterThanOrEqual(3);
      expect(view.activity.perSecond.length).toBeGreaterThan(0);
    }
    const svg = await fetch(`${base}diagrams/options.svg`);
    expect(svg.headers.get("content-type")).toBe("image/svg+xml");
    expect(await svg.text()).toContain("<title>AWAIT_OPTION</title>");
    expect((await fetch(`${base}nope`)).status).toBe(404);
    expect((await fetch(base, { method: "POST" })).status).toBe(405);
  });
});

describe.skipIf(!ok)("--status-page on a unix socket", () => {
  it("shows the socket path decoded in the address, as people write it", async () => {
    const port = await freePort();
    const srv = await startServer([`--status-page=127.0.0.1:${port}`, "memory", "1M"]);
    try {
      expect(await waitFor(() => canConnect({ host: "127.0.0.1", port }), 10_000)).toBe(true);
      const view = (await (await fetch(`http://127.0.0.1:${port}/status.json`)).json()) as { server: { address: string; display: string } };
      expect(view.server.address).toBe(`nbd+unix:///?socket=${encodeURIComponent(srv.sock)}`);
      expect(view.server.display).toBe(`nbd+unix:///?socket=${srv.sock}`);
      const html = await (await fetch(`http://127.0.0.1:${port}/`)).text();
      expect(html).toContain(`<title>nbdstate nbd+unix:///?socket=${srv.sock} status</title>`);
      expect(html).toContain(JSON.stringify(`nbd+unix:///?socket=${srv.sock}`).replace(/</g, "\\u003c"));
    } finally {
      await srv.stop();
    }
  }, 20_000);
});
