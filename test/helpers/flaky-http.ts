// A tiny HTTP server that serves one buffer with byte ranges and misbehaves
// on purpose: it cuts the connection in the middle of every Nth body, and
// answers 503 to every Mth request. For the one case nginx cannot play: a
// server that drops connections mid-transfer.
import http from "node:http";
import type { AddressInfo } from "node:net";

export interface FlakyOptions {
  /** Cut the socket halfway through every Nth ranged GET body (0: never). GETs of byte 0 alone (a size probe) are served and not counted. */
  dropEvery?: number;
  /** Answer 503 to every Mth GET (0: never). */
  fail503Every?: number;
  /** Answer every GET with this status instead (a server that is down for good). */
  alwaysStatus?: number;
  /** Never answer GETs (a server that hangs). */
  stall?: boolean;
}

export interface FlakyServer {
  url: string;
  readonly gets: number;
  readonly drops: number;
  readonly errors503: number;
  close(): Promise<void>;
}

export async function startFlakyServer(data: Buffer, o: FlakyOptions = {}): Promise<FlakyServer> {
  let gets = 0;
  let drops = 0;
  let errors503 = 0;
  const server = http.createServer((req, res) => {
    if (req.method === "HEAD") {
      res.writeHead(200, { "content-length": data.length, "accept-ranges": "bytes" });
      res.end();
      return;
    }
    // The plugin's size probe (its first byte) is served normally and not counted.
    const probe = req.headers.range === "bytes=0-0";
    if (!probe) gets++;
    if (o.stall && !probe) return;
    if (o.alwaysStatus && !probe) {
      res.writeHead(o.alwaysStatus, { "content-length": 0 });
      res.end();
      return;
    }
    if (o.fail503Every && !probe && gets % o.fail503Every === 0) {
      errors503++;
      res.writeHead(503, { "content-length": 0, "retry-after": "0" });
      res.end();
      return;
    }
    const m = /^bytes=([0-9]+)-([0-9]+)$/.exec(req.headers.range ?? "");
    if (!m) {
      res.writeHead(200, { "content-length": data.length });
      res.end(data);
      return;
    }
    const start = Number(m[1]);
    const end = Math.min(Number(m[2]), data.length - 1);
    const body = data.subarray(start, end + 1);
    res.writeHead(206, { "content-length": body.length, "content-range": `bytes ${start}-${end}/${data.length}` });
    if (o.dropEvery && gets % o.dropEvery === 0 && body.length > 1) {
      drops++;
      // Half the body, then a reset: the client sees a cut-off transfer.
      res.write(body.subarray(0, body.length >> 1), () => req.socket.resetAndDestroy());
      return;
    }
    res.end(body);
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/disk.img`,
    get gets() {
      return gets;
    },
    get drops() {
      return drops;
    },
    get errors503() {
      return errors503;
    },
    close() {
      server.closeAllConnections();
      return new Promise((r) => server.close(() => r()));
    },
  };
}
