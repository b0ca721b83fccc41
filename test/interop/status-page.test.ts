// --status-page in headless Chromium: the page served by nbdstate shows
// the server, the memory plugin's lifecycle and a live connection, each
// with its generated diagram and the current state highlighted; a client
// that enters transmission shows up as SERVING, and is gone once it
// disconnects. Chromium is Debian's (`chromium`), driven by playwright-core.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chromium, type Browser, type Page } from "playwright-core";
import { connect } from "node:net";
import { openClient, type NbdClient } from "../../src/client/index.js";
import { requireTool } from "../helpers/tools.js";
import { canConnect, freePort, isNbdkit, startServer, waitFor, type RunningServer } from "../helpers/server.js";

const CHROMIUM = "/usr/bin/chromium";
const ok = !isNbdkit && requireTool(CHROMIUM, "chromium");

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

/** The text of the <dd> after the <dt> named `label` in a card. */
async function field(page: Page, card: string, label: string): Promise<string | null> {
  return page.evaluate(
    ([sel, name]) => {
      const el = document.querySelector(sel!);
      const dt = [...(el?.querySelectorAll("dt") ?? [])].find((d) => d.textContent === name);
      return dt?.nextElementSibling?.textContent ?? null;
    },
    [card, label],
  );
}

describe.skipIf(!ok)("--status-page in headless Chromium", () => {
  let srv: RunningServer;
  let port: number;
  let browser: Browser;
  let page: Page;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    port = await freePort();
    srv = await startServer([`--status-page=127.0.0.1:${port}`, "memory", "1M"]);
    // The page listens right after the NBD socket does.
    expect(await waitFor(() => canConnect({ host: "127.0.0.1", port }), 10_000)).toBe(true);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 60_000 });
    page = await browser.newPage();
    page.on("pageerror", (e) => pageErrors.push(String(e)));
    page.on("console", (m) => {
      if (m.type() === "error") pageErrors.push(m.text());
    });
  }, 90_000);

  afterAll(async () => {
    await browser?.close();
    await srv?.stop();
  });

  it("shows the server, the layer and a connection reaching transmission, then gone", async () => {
    await page.goto(`http://127.0.0.1:${port}/`);
    expect(await page.title()).toContain("nbdstate");

    // Server and backend layer, each with its diagram and the current state marked.
    await page.waitForSelector('.card.server[data-state="LISTENING"]', { timeout: 10_000 });
    expect(await page.textContent(".card.server g.node.current title")).toBe("LISTENING");
    await page.waitForSelector('.card.layers[data-key="layer:memory"][data-state="running"]', { timeout: 10_000 });
    expect(await page.textContent('.card.layers[data-key="layer:memory"] g.node.current title')).toBe("running");
    expect(await page.locator(".card.layers svg").count()).toBe(1);
    expect(await page.locator(".card.connections").count()).toBe(0);

    // A client in transmission: SERVING, highlighted in the transmission diagram.
    const client: NbdClient = await openClient({ path: srv.sock });
    try {
      await page.waitForSelector('.card.connections[data-diagram="transmission"][data-state="SERVING"]', { timeout: 10_000 });
      const card = ".card.connections";
      expect(await page.locator(card).count()).toBe(1);
      expect(await page.textContent(`${card} g.node.current title`)).toBe("SERVING");
      expect(await page.locator(`${card} g.node.current`).count()).toBe(1);
      expect(await field(page, card, "phase")).toBe("SERVING");
      expect(await field(page, card, "client")).toBe("unix");
      expect(await field(page, card, "export")).toBe("");
      expect(await page.textContent("#nconn")).toBe("1");
      // Its context, open in the memory plugin.
      await page.waitForSelector('.card.contexts[data-state="open"]', { timeout: 10_000 });

      // Requests move the byte counters (pushed every 250 ms).
      await client.pwrite(Buffer.alloc(4096, 0xab), 0);
      expect((await client.pread(4096, 0)).every((b) => b === 0xab)).toBe(true);
      expect(
        await waitFor(async () => Number(await field(page, card, "bytes read")) >= 4096 && Number(await field(page, card, "bytes written")) >= 4096, 10_000),
      ).toBe(true);
    } finally {
      await client.disconnect();
    }

    await page.waitForFunction(() => document.querySelectorAll(".card.connections").length === 0, undefined, { timeout: 10_000 });
    expect(await page.textContent("#nconn")).toBe("0");
    await page.waitForSelector('.card.contexts[data-state=""]', { timeout: 10_000 });
    expect(await page.locator(".card.server g.node.current title").textContent()).toBe("LISTENING");
    expect(pageErrors).toEqual([]);
  }, 60_000);

  it("shows a connection held in the handshake, then in option haggling", async () => {
    await page.goto(`http://127.0.0.1:${port}/`);
    await page.waitForSelector('.card.server[data-state="LISTENING"]', { timeout: 10_000 });
    const sock = connect(srv.sock);
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
      const card = ".card.connections";
      await page.waitForSelector(`${card}[data-diagram="handshake"][data-state="AWAIT_CLIENT_FLAGS"]`, { timeout: 10_000 });
      expect(await page.textContent(`${card} g.node.current title`)).toBe("AWAIT_CLIENT_FLAGS");
      expect(await field(page, card, "phase")).toBe("handshake");
      // Client flags FIXED_NEWSTYLE | NO_ZEROES: on to the options machine.
      sock.write(Buffer.from([0, 0, 0, 3]));
      await page.waitForSelector(`${card}[data-diagram="options"][data-state="AWAIT_OPTION"]`, { timeout: 10_000 });
      expect(await page.textContent(`${card} g.node.current title`)).toBe("AWAIT_OPTION");
      expect(await field(page, card, "phase")).toBe("options");
    } finally {
      sock.destroy();
    }
    await page.waitForFunction(() => document.querySelectorAll(".card.connections").length === 0, undefined, { timeout: 10_000 });
    expect(pageErrors).toEqual([]);
  }, 60_000);

  it("serves one view as JSON and the diagrams as SVG, nothing else", async () => {
    const view = (await (await fetch(`http://127.0.0.1:${port}/status.json`)).json()) as {
      server: { state: string };
      layers: { name: string; state: string }[];
      connections: unknown[];
    };
    expect(view.server.state).toBe("LISTENING");
    expect(view.layers).toEqual([expect.objectContaining({ name: "memory", state: "running" })]);
    expect(view.connections).toEqual([]);
    const svg = await fetch(`http://127.0.0.1:${port}/diagrams/options.svg`);
    expect(svg.headers.get("content-type")).toBe("image/svg+xml");
    expect(await svg.text()).toContain("<title>AWAIT_OPTION</title>");
    expect((await fetch(`http://127.0.0.1:${port}/nope`)).status).toBe(404);
    expect((await fetch(`http://127.0.0.1:${port}/`, { method: "POST" })).status).toBe(405);
  });
});
