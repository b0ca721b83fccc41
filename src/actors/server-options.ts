// What the command line hands to the server actor.

import type { TlsCredentials } from "./tls.js";
import type { TransmissionThreads } from "./transmission-loop.js";

export type Listener =
  | {
      kind: "tcp";
      host?: string;
      port: number;
      /** -4 / -6: that address family only (-6 turns dual-stack IPv4 off). */
      family?: 4 | 6;
      /** --keepalive: SO_KEEPALIVE on every accepted connection. */
      keepalive?: boolean;
    }
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
  /** --no-sr: refuse NBD_OPT_STRUCTURED_REPLY (as nbdkit: the client gets simple replies only). */
  noStructuredReplies?: boolean;
  /** --no-mc: refuse meta contexts (NBD_OPT_SET/LIST_META_CONTEXT), so no block status. */
  noMetaContexts?: boolean;
  /**
   * --mask-handshake=MASK: the global handshake flags sent are
   * (NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES) & MASK; default all.
   */
  maskHandshake?: number;
  /** Worker threads a connection's transmission may move to (src/threads). */
  workers?: TransmissionThreads;
}
