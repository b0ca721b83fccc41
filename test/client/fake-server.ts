// A scripted in-process NBD server for client tests: it negotiates options
// itself, then hands every request to the test, which writes raw replies.

import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as C from "../../src/protocol/constants.js";
import * as W from "../../src/protocol/wire.js";
import { StreamReader } from "../../src/client/reader.js";

export interface FakeConn {
  sock: net.Socket;
  /** Requests received so far (transmission phase). */
  requests: W.RequestHeader[];
  /** Resolves once at least n requests have arrived. */
  waitRequests(n: number): Promise<W.RequestHeader[]>;
  simple(error: number, cookie: bigint, data?: Buffer): void;
  chunk(flags: number, type: number, cookie: bigint, payload?: Buffer): void;
}

export interface FakeServer {
  path: string;
  connections: FakeConn[];
  nextConnection(): Promise<FakeConn>;
  close(): Promise<void>;
}

/** Bytes written by `write` are delivered in pieces of at most `split` bytes. */
export async function startFakeServer(opts: { size?: number; split?: number; contexts?: string[] } = {}): Promise<FakeServer> {
  const dir = mkdtempSync(join(tmpdir(), "nbdstate-fake-"));
  const path = join(dir, "fake.sock");
  const connections: FakeConn[] = [];
  let waiting: ((c: FakeConn) => void)[] = [];
  const server = net.createServer(async (sock) => {
    const write = (b: Buffer) => {
      if (!opts.split) return void sock.write(b);
      for (let i = 0; i < b.length; i += opts.split) sock.write(b.subarray(i, i + opts.split));
    };
    const reader = new StreamReader(sock, () => undefined);
    const requests: W.RequestHeader[] = [];
    let waiters: { n: number; resolve: (r: W.RequestHeader[]) => void }[] = [];
    const conn: FakeConn = {
      sock,
      requests,
      waitRequests: (n) => new Promise((resolve) => {
        waiters.push({ n, resolve });
        wake();
      }),
      simple: (error, cookie, data) => write(Buffer.concat([W.encodeSimpleReply(error, cookie), data ?? Buffer.alloc(0)])),
      chunk: (flags, type, cookie, payload = Buffer.alloc(0)) =>
        write(Buffer.concat([W.encodeStructuredReplyHeader(flags, type, cookie, payload.length), payload])),
    };
    const wake = () => {
      waiters = waiters.filter((w) => (requests.length >= w.n ? (w.resolve([...requests]), false) : true));
    };
    try {
      sock.write(W.encodeGreeting(C.NBD_FLAG_FIXED_NEWSTYLE | C.NBD_FLAG_NO_ZEROES));
      await reader.read(4);
      for (;;) {
        const h = W.decodeOptionHeader(await reader.read(16));
        const data = await reader.read(h.length);
        const reply = (type: number, d?: Buffer) => sock.write(W.encodeOptionReply(h.option, type, d));
        if (h.option === C.NBD_OPT_GO) {
          reply(C.NBD_REP_INFO, W.encodeInfoReply({ type: C.NBD_INFO_EXPORT, size: opts.size ?? 1 << 20, transmissionFlags: 0x1ed }));
          reply(C.NBD_REP_ACK);
          break;
        } else if (h.option === C.NBD_OPT_SET_META_CONTEXT) {
          (opts.contexts ?? [C.BASE_ALLOCATION]).forEach((name, i) => reply(C.NBD_REP_META_CONTEXT, W.encodeMetaContextReply(i + 1, name)));
          reply(C.NBD_REP_ACK);
        } else if (h.option === C.NBD_OPT_STRUCTURED_REPLY) reply(C.NBD_REP_ACK);
        else reply(C.NBD_REP_ERR_UNSUP, Buffer.from("fake server"));
        void data;
      }
      connections.push(conn);
      waiting.forEach((w) => w(conn));
      waiting = [];
      for (;;) {
        const r = W.decodeRequest(await reader.read(28));
        if (r.type === C.NBD_CMD_WRITE) await reader.read(r.length);
        requests.push(r);
        wake();
        if (r.type === C.NBD_CMD_DISC) return void sock.end();
      }
    } catch {
      sock.destroy();
    }
  });
  await new Promise<void>((r) => server.listen(path, r));
  return {
    path,
    connections,
    nextConnection: () => new Promise((r) => waiting.push(r)),
    close: async () => {
      for (const c of connections) c.sock.destroy();
      await new Promise((r) => server.close(r));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
