// What the command line hands to the server actor.

import type { TlsCredentials } from "./tls.js";

export type Listener =
  | { kind: "tcp"; host?: string; port: number }
  | { kind: "unix"; path: string }
  | { kind: "stdio" }
  /** systemd socket activation: fds 3 .. 3+LISTEN_FDS-1 */
  | { kind: "activation"; fds: number[] };

export interface ServerOptions {
  listeners: Listener[];
  /** -r: export read-only, whatever the plugin can do. */
  readonly: boolean;
  /** -t: requests in flight per connection before reading pauses. */
  threads: number;
  /** --tls=off|on|require. */
  tls: "off" | "on" | "require";
  /** Certificates or PSK keys (loaded at startup); required unless tls is "off". */
  tlsCredentials?: TlsCredentials;
  /** Called once every listener accepts connections. */
  onListening?: () => void;
  /** Stop after the first connection closes (-s, --run wraps this itself). */
  singleConnection?: boolean;
  /** --no-sr: refuse structured replies (and extended headers). */
  noStructuredReplies?: boolean;
  /** --no-mc: refuse meta contexts. */
  noMetaContexts?: boolean;
  /** --mask-handshake: handshake flags not to advertise. */
  maskHandshake?: number;
}
