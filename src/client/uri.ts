// NBD URIs (the libnbd / qemu scheme):
//   nbd://host[:port][/export]          nbds://... (TLS)
//   nbd+unix:///export?socket=PATH      nbds+unix:///export?socket=PATH
// The export name is the path without its leading "/", percent-decoded.

import { NBD_DEFAULT_PORT } from "../protocol/constants.js";
import type { NbdClient } from "./client.js";
import { openClient, type OpenOptions } from "./open.js";
import type { ConnectTarget } from "./handshake.js";
import { clientTlsFromFiles } from "./tls.js";

export interface NbdUri {
  target: ConnectTarget;
  exportName: string;
  tls: boolean;
  /** libnbd's query parameters and user name for TLS: ?tls-certificates=DIR&tls-psk-file=FILE, nbds://USER@... */
  tlsCertificates?: string;
  tlsPskFile?: string;
  tlsUsername?: string;
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
  const extra: Partial<NbdUri> = {};
  const certs = u.searchParams.get("tls-certificates");
  const psk = u.searchParams.get("tls-psk-file");
  if (certs) extra.tlsCertificates = certs;
  if (psk) extra.tlsPskFile = psk;
  if (u.username) extra.tlsUsername = decodeURIComponent(u.username);
  if (scheme.endsWith("+unix")) {
    if (u.host) throw new Error(`NBD URI ${uri}: a unix URI takes no host (use ${scheme}:///export?socket=PATH)`);
    const path = u.searchParams.get("socket");
    if (!path) throw new Error(`NBD URI ${uri}: missing ?socket=PATH`);
    return { target: { path }, exportName, tls, ...extra };
  }
  const host = u.hostname.replace(/^\[(.*)\]$/, "$1") || "localhost";
  const port = u.port ? Number(u.port) : NBD_DEFAULT_PORT;
  return { target: { host, port }, exportName, tls, ...extra };
}

/** Parse a URI and NbdClient.open it (nbds: TLS required, with the URI's certificates or PSK file). */
export async function openNbdUri(uri: string, opts: Omit<OpenOptions, "path" | "host" | "port" | "socket"> = {}): Promise<NbdClient> {
  const p = parseNbdUri(uri);
  const tls = p.tls
    ? clientTlsFromFiles({ mode: "require", certificates: p.tlsCertificates, pskFile: p.tlsPskFile, username: p.tlsUsername })
    : undefined;
  return openClient({ ...p.target, exportName: p.exportName, ...(tls ? { tls } : {}), ...opts } as OpenOptions);
}
