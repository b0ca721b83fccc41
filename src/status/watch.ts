// Watching the machines: --inspect (stderr lines, or a WebSocket inspector
// endpoint) and --status-page, set up by the CLI around the stack and the
// server. With neither, watch() returns no inspect function and the
// actors are created without an inspect option at all.

import type { RunningServer } from "../actors/server.js";
import type { Stack } from "../backend/stack.js";
import { fanOut, type InspectFn } from "./actors.js";
import { displayAddress } from "./address.js";
import { startStatusPage, type StatusPage } from "./http.js";
import { StatusModel } from "./model.js";
import { transitionLogger } from "./stderr.js";
import { statusVersion } from "./version.js";
import { webSocketInspect } from "./websocket.js";

export type InspectTarget = { kind: "stderr" } | { kind: "ws"; url: string };

export interface WatchOptions {
  inspect: readonly InspectTarget[];
  statusPage?: { host?: string; port: number };
  /** Where --inspect=stderr lines go (one line each, without newline). */
  write: (line: string) => void;
  log: (msg: string) => void;
}

export interface Watching {
  /** For the Stack and startServer; undefined when nothing watches. */
  inspect: InspectFn | undefined;
  /** Once the server listens: open the status page (if asked). */
  serve(stack: Stack, server: RunningServer): Promise<StatusPage | undefined>;
  /** Close the status page and the inspector connections. */
  close(): Promise<void>;
}

export function watch(o: WatchOptions): Watching {
  const sockets = o.inspect.filter((t) => t.kind === "ws").map((t) => webSocketInspect(t.url));
  const stderr = o.inspect.some((t) => t.kind === "stderr") ? transitionLogger(o.write) : undefined;
  const model = o.statusPage ? new StatusModel({ version: statusVersion() }) : undefined;
  let page: StatusPage | undefined;
  return {
    inspect: fanOut([stderr, ...sockets.map((s) => s.inspect), model?.inspect]),
    async serve(stack, server) {
      if (!model || !o.statusPage) return undefined;
      model.attach(stack, server);
      page = await startStatusPage(model, { ...o.statusPage, title: `nbdstate ${displayAddress(server.address.uri)}` });
      o.log(`status page: ${page.url}`);
      return page;
    },
    async close() {
      await Promise.all(sockets.map((s) => s.stop()));
      await page?.close();
      model?.detach();
    },
  };
}

export type { StatusPage } from "./http.js";
export type { StatusView } from "./model.js";

