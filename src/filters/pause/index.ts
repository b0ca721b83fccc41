// pause filter (nbdkit-pause-filter): hold NBD requests while paused, as
// told over a control socket (pause-control=SOCKET): 'p' pauses ('P' is
// answered once the requests already running have finished), 'r' resumes
// ('R'); space, tab and newline are ignored; anything else gets 'X'.
//
// Every data request counts itself in and out (that is how a pause knows
// when the server is idle); while not paused that is all it costs.

import { rmSync } from "node:fs";
import net from "node:net";
import { resolve } from "node:path";
import type { Filter, ServerServices } from "../../backend/types.js";

/** sun_path is 108 bytes on Linux, with its NUL. */
const UNIX_PATH_MAX = 108;

export default function createFilter(): Filter {
  let sockPath: string | null = null;
  let control: net.Server | null = null;
  const controlClients = new Set<net.Socket>();
  let server: ServerServices | null = null;

  /** Set while paused: requests wait for it. */
  let gate: Promise<void> | null = null;
  let open: (() => void) | null = null;
  let inflight = 0;
  let idle: (() => void) | null = null;
  /** Commands run one at a time, in the order they came, whoever sent them. */
  let commands: Promise<void> = Promise.resolve();

  async function pause(): Promise<void> {
    if (!gate) {
      gate = new Promise<void>((r) => (open = r));
      server?.debug("pause: pausing, waiting for requests to complete");
    }
    if (inflight > 0) await new Promise<void>((r) => (idle = r));
    server?.debug("pause: paused");
  }

  function resume(): void {
    if (!gate) return;
    gate = null;
    open!();
    open = null;
    server?.debug("pause: resumed");
  }

  function done(): void {
    if (--inflight === 0 && idle) {
      idle();
      idle = null;
    }
  }

  /** Run a request, after any pause, counted in flight. */
  async function request<T>(op: () => Promise<T>): Promise<T> {
    while (gate) await gate;
    inflight++;
    try {
      return await op();
    } finally {
      done();
    }
  }

  function serveControl(s: net.Socket): void {
    controlClients.add(s);
    s.on("close", () => controlClients.delete(s));
    s.on("error", () => {});
    s.on("data", (chunk: Buffer) => {
      for (const c of chunk) {
        commands = commands.then(async () => {
          let reply: string;
          if (c === 0x70 /* p */) {
            await pause();
            reply = "P";
          } else if (c === 0x72 /* r */) {
            resume();
            reply = "R";
          } else if (c === 0x0a || c === 0x09 || c === 0x20) return;
          else reply = "X";
          if (!s.destroyed) s.write(reply);
        });
      }
    });
  }

  return {
    name: "pause",
    version: "1.0.0",
    longname: "nbdstate pause filter",
    description: "Pause NBD requests, and resume them, from a control socket.",
    configHelp: "pause-control=SOCKET           Control socket.",

    config(next, key, value) {
      if (key === "pause-control") {
        sockPath = resolve(value);
        return;
      }
      return next(key, value);
    },

    configComplete(next) {
      if (sockPath === null) throw new Error("pause: pause-control socket was not set");
      const len = Buffer.byteLength(sockPath);
      if (len >= UNIX_PATH_MAX) {
        throw new Error(`pause: pause-control socket path too long: length ${len} > max ${UNIX_PATH_MAX - 1} bytes`);
      }
      return next();
    },

    async afterFork(_lower, services) {
      server = services;
      rmSync(sockPath!, { force: true }); // a stale socket from an earlier run
      const srv = net.createServer(serveControl);
      await new Promise<void>((res, rej) => {
        srv.once("error", (e) => rej(new Error(`pause: ${sockPath}: ${e.message}`)));
        srv.listen(sockPath!, () => res());
      });
      srv.unref();
      control = srv;
    },

    async unload() {
      resume();
      for (const s of controlClients) s.destroy();
      if (control) await new Promise<void>((r) => control!.close(() => r()));
      control = null;
      if (sockPath) rmSync(sockPath, { force: true });
    },

    pread: (n, _h, buf, off, fl) => request(() => n.pread(buf, off, fl)),
    preadSparse: (n, _h, buf, off, fl) => request(() => n.preadSparse(buf, off, fl)),
    pwrite: (n, _h, buf, off, fl) => request(() => n.pwrite(buf, off, fl)),
    zero: (n, _h, count, off, fl) => request(() => n.zero(count, off, fl)),
    trim: (n, _h, count, off, fl) => request(() => n.trim(count, off, fl)),
    extents: (n, _h, count, off, fl) => request(() => n.extents(count, off, fl)),
    cache: (n, _h, count, off, fl) => request(() => n.cache(count, off, fl)),
    // nbdkit lets flush through while paused; a flush is a request like any other.
    flush: (n, _h, fl) => request(() => n.flush(fl)),
  };
}
