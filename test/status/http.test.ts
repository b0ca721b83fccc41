// The status page's web server on its own (no NBD server attached): paths
// read leniently (the printed URL + "/status.json"), the first view written
// into the page, nothing loaded from elsewhere, read-only.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pathOf, startStatusPage, type StatusPage } from "../../src/status/http.js";
import { StatusModel } from "../../src/status/model.js";

describe("pathOf", () => {
  it("drops the query, joins runs of slashes, drops a trailing slash", () => {
    expect(pathOf("/")).toBe("/");
    expect(pathOf("//status.json")).toBe("/status.json");
    expect(pathOf("/status.json/?x=1")).toBe("/status.json");
    expect(pathOf("/diagrams//server.svg")).toBe("/diagrams/server.svg");
    expect(pathOf(undefined)).toBe("/");
    expect(pathOf("//")).toBe("/");
  });
});

describe("startStatusPage", () => {
  let page: StatusPage;
  const model = new StatusModel({ version: "9.9.9" });
  beforeAll(async () => {
    page = await startStatusPage(model, { port: 0, title: "nbdstate test" });
  });
  afterAll(async () => {
    await page.close();
    model.detach();
  });

  it("answers the printed URL with /status.json appended", async () => {
    // The printed URL has no trailing slash: "/status.json" appended as it is, or with one more slash.
    for (const url of [`${page.url}/status.json`, `${page.url}//status.json`, `${page.url}/status.json?x`]) {
      const r = await fetch(url);
      expect(r.status).toBe(200);
      expect(((await r.json()) as { version: string }).version).toBe("9.9.9");
    }
  });

  it("writes the current view into the page and loads nothing from elsewhere", async () => {
    const html = await (await fetch(page.url)).text();
    const m = /<script type="application\/json" id="initial">([\s\S]*?)<\/script>/.exec(html);
    expect(m).not.toBeNull();
    expect((JSON.parse(m![1]!) as { version: string }).version).toBe("9.9.9");
    // Only SVG namespace URIs, no scripts, styles, fonts or images from a network.
    const urls = [...html.matchAll(/https?:\/\/[^\s"'<>)]+/g)].map((x) => x[0]);
    expect(urls.filter((u) => !u.startsWith("http://www.w3.org/"))).toEqual([]);
    expect(html).not.toMatch(/<(script|link|img)\b[^>]*\b(src|href)="(?!data:)/);
  });

  it("is read-only", async () => {
    for (const method of ["POST", "PUT", "DELETE"]) expect((await fetch(page.url, { method })).status).toBe(405);
  });
});
