// Debian's nginx on loopback ports with its own configuration in a temp
// dir: a plain HTTP server and an HTTPS one (self-signed certificate for
// localhost / 127.0.0.1) over the same document root, with basic auth on
// /private/, a header check on /header/, a cookie check on /cookie/, a
// redirect /redirect.img -> /disk.img and HEAD refused under /nohead/.
// The access log records nginx's connection serial number per request.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { canConnect, freePort, makeTmpDir, removeTmpDir, runOk, sleep } from "./server.js";

export interface Nginx {
  dir: string;
  /** Document root: put files here. */
  www: string;
  port: number;
  sslPort: number;
  /** The self-signed certificate (PEM file), for cainfo=. */
  cert: string;
  /** A Unix socket the plain server listens on too (unix-socket-path=). */
  unixSocket: string;
  http(path: string): string;
  https(path: string): string;
  /** The access log lines so far: "CONN METHOD URI STATUS RANGE". */
  accessLog(): string[];
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
process.on("exit", () => {
  for (const c of live) c.kill("SIGKILL");
});

/** A self-signed certificate for localhost and 127.0.0.1 (openssl). */
export async function selfSignedCert(dir: string): Promise<{ cert: string; key: string }> {
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  await runOk("openssl", [
    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", cert,
  ]);
  return { cert, key };
}

export async function startNginx(users: Record<string, string> = { alice: "wonderland" }): Promise<Nginx> {
  const dir = makeTmpDir("nginx-");
  const www = join(dir, "www");
  for (const d of ["www", "www/private", "www/header", "www/cookie", "www/nohead", "tmp"]) mkdirSync(join(dir, d), { recursive: true });
  const { cert, key } = await selfSignedCert(dir);
  writeFileSync(join(dir, "htpasswd"), Object.entries(users).map(([u, p]) => `${u}:{PLAIN}${p}\n`).join(""));
  const port = await freePort();
  const sslPort = await freePort();
  const root = process.getuid?.() === 0;
  const tmp = join(dir, "tmp");
  const locations = `
      root ${www};
      location /private/ { auth_basic "disks"; auth_basic_user_file ${join(dir, "htpasswd")}; }
      location /header/ { if ($http_x_disk_token != "sesame") { return 403; } }
      location /cookie/ { if ($cookie_session != "abc123") { return 403; } }
      location /nohead/ { if ($request_method = HEAD) { return 405; } }
      location = /redirect.img { return 302 /disk.img; }
      location = /loop.img { return 302 /loop.img; }`;
  const conf = `
${root ? "user root root;" : ""}
worker_processes 1;
daemon off;
master_process on;
pid ${join(dir, "nginx.pid")};
error_log ${join(dir, "error.log")} warn;
events { worker_connections 512; }
http {
  log_format conns '$connection $request_method $uri $status $http_range';
  access_log ${join(dir, "access.log")} conns;
  client_body_temp_path ${tmp}/body;
  proxy_temp_path ${tmp}/proxy;
  fastcgi_temp_path ${tmp}/fastcgi;
  uwsgi_temp_path ${tmp}/uwsgi;
  scgi_temp_path ${tmp}/scgi;
  default_type application/octet-stream;
  sendfile on;
  keepalive_requests 100000;
  server {
    listen 127.0.0.1:${port};
    listen unix:${join(dir, "http.sock")};
    ${locations}
  }
  server {
    listen 127.0.0.1:${sslPort} ssl;
    ssl_certificate ${cert};
    ssl_certificate_key ${key};
    ${locations}
  }
}
`;
  const confFile = join(dir, "nginx.conf");
  writeFileSync(confFile, conf);
  const child = spawn("nginx", ["-p", dir, "-c", confFile], { stdio: ["ignore", "ignore", "pipe"] });
  live.add(child);
  let stderr = "";
  let exited = false;
  child.stderr!.setEncoding("utf8").on("data", (s: string) => (stderr += s));
  const exit = new Promise<void>((r) => child.on("exit", () => ((exited = true), live.delete(child), r())));
  child.on("error", () => {});
  const deadline = Date.now() + 10_000;
  while (!((await canConnect({ host: "127.0.0.1", port })) && (await canConnect({ host: "127.0.0.1", port: sslPort })))) {
    if (exited || Date.now() > deadline) {
      child.kill("SIGKILL");
      const log = existsSync(join(dir, "error.log")) ? readFileSync(join(dir, "error.log"), "utf8") : "";
      throw new Error(`nginx did not start:\n${stderr}\n${log}`);
    }
    await sleep(25);
  }
  return {
    dir,
    www,
    port,
    sslPort,
    cert,
    unixSocket: join(dir, "http.sock"),
    http: (p) => `http://127.0.0.1:${port}/${p.replace(/^\//, "")}`,
    https: (p) => `https://localhost:${sslPort}/${p.replace(/^\//, "")}`,
    accessLog: () => {
      const f = join(dir, "access.log");
      return existsSync(f) ? readFileSync(f, "utf8").split("\n").filter(Boolean) : [];
    },
    async stop() {
      if (!exited) {
        child.kill("SIGQUIT");
        const t = setTimeout(() => child.kill("SIGKILL"), 5000);
        await exit;
        clearTimeout(t);
      }
      removeTmpDir(dir);
    },
  };
}
