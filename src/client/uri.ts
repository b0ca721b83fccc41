// NBD URIs (the libnbd / qemu scheme):
//   nbd://host[:port][/export]          nbds://... (TLS)
//   nbd+unix:///export?socket=PATH      nbds+unix:///export?socket=PATH
// The export name is the path without its leading "/", percent-decoded.

import { NBD_DEFAULT_PORT } from "../protocol/constants.js";
import type { NbdClient } from "./client.js";
import { openClient, type OpenOptions } from "./open.js";
import type { ConnectTarget } from "./handshake.js";

export interface NbdUri {
  target: ConnectTarget;
  exportName: string;
  tls: boolean;
}

/** Parse an NBD URI; throws on an unknown scheme or a missing socket path. */
export function parseNbdUri(uri: string): NbdUri {
  const m = /^([a-z+]+):/i.exec(uri);
  const scheme = m?.[1].toLowerCase();
  if (!scheme || !["nbd", "nbds", "nbd+unix", "nbds+unix"].includes(scheme)) {
    throw new Error(`not an NBD URI (expected nbd://, nbds://, nbd+unix:// or nbds+unix://): ${uri}`);
  }
  let u: URL;
  try {
    u = new URL(uri);
  } catch {
    throw new Error(`malformed NBD URI: ${uri}`);
  }
  const tls = scheme.startsWith("nbds");
  const exportName = decodeURIComponent(u.pathname.replace(/^\//, ""));
  if (scheme.endsWith("+unix")) {
    if (u.host) throw new Error(`NBD URI ${uri}: a unix URI takes no host (use ${scheme}:///export?socket=PATH)`);
    const path = u.searchParams.get("socket");
    if (!path) throw new Error(`NBD URI ${uri}: missing ?socket=PATH`);
    return { target: { path }, exportName, tls };
  }
  const host = u.hostname.replace(/^\[(.*)\]$/, "$1") || "localhost";
  const port = u.port ? Number(u.port) : NBD_DEFAULT_PORT;
  return { target: { host, port }, exportName, tls };
}

/** Parse a URI and NbdClient.open it; TLS URIs are recognised but not supported yet. */
export async function openNbdUri(uri: string, opts: Omit<OpenOptions, "path" | "host" | "port" | "socket"> = {}): Promise<NbdClient> {
  const p = parseNbdUri(uri);
  if (p.tls) throw new Error(`NBD URI ${uri}: TLS (nbds) is not supported yet`);
  return openClient({ ...p.target, exportName: p.exportName, ...opts } as OpenOptions);
}
