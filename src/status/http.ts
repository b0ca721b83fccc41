// --status-page=[HOST:]PORT: a small local web server (node:http) showing
// the status page. GET / is the page, GET /events a server-sent event
// stream of StatusView JSON (pushed every PERIOD_MS while it changes, and
// THROTTLE_MS after inspection events), GET /status.json one view,
// GET /diagrams/ID.svg a diagram as the page draws it. The page carries
// the view as it was when asked for, so it is complete before any event.
// Paths are read leniently about slashes: the printed URL with
// "/status.json" appended (http://HOST:PORT//status.json) works. Views
// are built only when someone asks (a page load, /status.json, or while an
// event stream is open); the model's once-a-second counter sampling for
// rates and the sparkline is the only thing that runs unwatched.

import http from "node:http";
import type { AddressInfo } from "node:net";
import { loadDiagrams } from "./diagrams.js";
import type { StatusModel } from "./model.js";
import { pageHtml } from "./page.js";

export const PERIOD_MS = 250;
export const THROTTLE_MS = 50;

export interface StatusPageOptions {
  /** Default 127.0.0.1: the page is for this machine only unless a host is given. */
  host?: string;
  port: number;
  title?: string;
}

export interface StatusPage {
  /** http://HOST:PORT (no trailing slash: append /status.json and the like to it). */
  url: string;
  port: number;
  close(): Promise<void>;
}

/** The request's path: query dropped, runs of slashes as one, no trailing slash but the root's. */
export function pathOf(url: string | undefined): string {
  const raw = (url ?? "/").split(/[?#]/, 1)[0]!;
  const path = ("/" + raw).replace(/\/{2,}/g, "/").replace(/(.)\/$/, "$1");
  return path;
}

export async function startStatusPage(model: StatusModel, opts: StatusPageOptions): Promise<StatusPage> {
  const diagrams = await loadDiagrams();
  const parts = { diagrams, title: opts.title };
  const svgs = new Map(diagrams.filter((d) => d.svg !== undefined).map((d) => [d.id, d.svg!]));
  const clients = new Set<http.ServerResponse>();
  let last = "";
  let timer: NodeJS.Timeout | undefined;
  let ticker: NodeJS.Timeout | undefined;

  const push = () => {
    if (timer) clearTimeout(timer);
    timer = undefined;
    if (clients.size === 0) return;
    const json = JSON.stringify(model.view());
    if (json === last) return;
    last = json;
    for (const res of clients) res.write(`data: ${json}\n\n`);
  };
  model.onChange(() => {
    if (clients.size > 0 && !timer) timer = setTimeout(push, THROTTLE_MS);
  });

  const send = (res: http.ServerResponse, status: number, type: string, body: string, head: boolean) => {
    res.writeHead(status, { "Content-Type": type, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff" });
    res.end(head ? undefined : body);
  };

  const server = http.createServer((req, res) => {
    const head = req.method === "HEAD";
    if (req.method !== "GET" && !head) return send(res, 405, "text/plain", "method not allowed\n", head);
    const path = pathOf(req.url);
    if (path === "/" || path === "/index.html") return send(res, 200, "text/html; charset=utf-8", pageHtml(parts, model.view()), head);
    if (path === "/status.json") return send(res, 200, "application/json", JSON.stringify(model.view()) + "\n", head);
    const svg = /^\/diagrams\/([a-z-]+)\.svg$/.exec(path);
    if (svg && svgs.has(svg[1]!)) return send(res, 200, "image/svg+xml", svgs.get(svg[1]!)!, head);
    if (path === "/events" && !head) {
      res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-store", Connection: "keep-alive" });
      res.write(`retry: 1000\n\ndata: ${JSON.stringify(model.view())}\n\n`);
      clients.add(res);
      if (!ticker) ticker = setInterval(push, PERIOD_MS);
      req.on("close", () => {
        clients.delete(res);
        if (clients.size === 0 && ticker) {
          clearInterval(ticker);
          ticker = undefined;
          last = "";
        }
      });
      return;
    }
    send(res, 404, "text/plain", "not found\n", head);
  });

  const host = opts.host ?? "127.0.0.1";
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host, port: opts.port }, () => {
      server.off("error", reject);
      resolve();
    });
  });
  server.on("error", () => {});
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${host.includes(":") ? `[${host}]` : host}:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        model.onChange(undefined);
        if (timer) clearTimeout(timer);
        if (ticker) clearInterval(ticker);
        for (const res of clients) res.end();
        clients.clear();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
