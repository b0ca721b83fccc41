// Upstream servers for proxy tests (the nbd plugin, the shared and retry
// filters): nbdkit on a socket path of the test's choosing (so it can be
// stopped and started again on the same path), and a counting unix-socket
// proxy that tells how many connections really reached the upstream.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import net from "node:net";
import { canConnect, sleep } from "./server.js";

export interface Upstream {
  sock: string;
  pid: number;
  readonly stderr: string;
  readonly exited: boolean;
  /** Signal it (default SIGTERM) and wait for it to exit; the socket file is removed. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

const live = new Set<ChildProcess>();
process.on("exit", () => {
  for (const c of live) c.kill("SIGKILL");
});

/** `nbdkit -f -U SOCK ARGS...`, resolved once SOCK accepts connections. */
export async function startNbdkitAt(sock: string, args: readonly string[], timeoutMs = 15_000): Promise<Upstream> {
  rmSync(sock, { force: true });
  const child = spawn("nbdkit", ["-f", "-U", sock, ...args], { stdio: ["ignore", "ignore", "pipe"] });
  live.add(child);
  let stderr = "";
  let exited = false;
  child.stderr!.setEncoding("utf8");
  child.stderr!.on("data", (s: string) => (stderr += s));
  const exit = new Promise<void>((r) =>
    child.on("exit", () => {
      exited = true;
      live.delete(child);
      r();
    }),
  );
  child.on("error", () => {});
  const deadline = Date.now() + timeoutMs;
  while (!(existsSync(sock) && (await canConnect({ path: sock })))) {
    if (exited || Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`nbdkit ${args.join(" ")} did not start on ${sock}:\n${stderr}`);
    }
    await sleep(20);
  }
  return {
    sock,
    pid: child.pid!,
    get stderr() {
      return stderr;
    },
    get exited() {
      return exited;
    },
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      if (!exited) {
        child.kill(signal);
        const t = setTimeout(() => child.kill("SIGKILL"), 10_000);
        await exit;
        clearTimeout(t);
      }
      rmSync(sock, { force: true });
    },
  };
}

export interface CountingProxy {
  path: string;
  /** Connections accepted so far. */
  readonly connections: number;
  /** Connections open right now. */
  readonly open: number;
  /** Cut every open connection (both sides). */
  dropAll(): void;
  close(): Promise<void>;
}

/** A unix-socket proxy from `path` to `target` that counts the connections made through it. */
export async function startCountingProxy(path: string, target: string): Promise<CountingProxy> {
  rmSync(path, { force: true });
  let connections = 0;
  const pairs = new Set<[net.Socket, net.Socket]>();
  const server = net.createServer((down) => {
    connections++;
    const up = net.connect({ path: target });
    const pair: [net.Socket, net.Socket] = [down, up];
    pairs.add(pair);
    const done = () => {
      pairs.delete(pair);
      down.destroy();
      up.destroy();
    };
    down.on("error", done).on("close", done);
    up.on("error", done).on("close", done);
    down.pipe(up);
    up.pipe(down);
  });
  await new Promise<void>((res, rej) => {
    server.once("error", rej);
    server.listen(path, () => res());
  });
  return {
    path,
    get connections() {
      return connections;
    },
    get open() {
      return pairs.size;
    },
    dropAll() {
      for (const [a, b] of [...pairs]) {
        a.destroy();
        b.destroy();
      }
    },
    close() {
      for (const [a, b] of [...pairs]) {
        a.destroy();
        b.destroy();
      }
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}
