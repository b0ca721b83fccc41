// A raw-socket fuzzer for the server: seeded, so a failure replays. Each
// case opens a connection and sends random or mutated handshake, option
// and request streams, reads what comes back, and hangs up (sometimes
// abruptly, sometimes mid-frame).
import net from "node:net";
import * as C from "../../src/protocol/constants.js";
import { encodeInfoRequest, encodeMetaContextRequest, encodeOption, encodeRequest } from "../../src/protocol/wire.js";

/** mulberry32: a tiny seeded PRNG. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type R = () => number;
const int = (r: R, n: number) => Math.floor(r() * n);
const pick = <T>(r: R, xs: readonly T[]): T => xs[int(r, xs.length)]!;
const bytes = (r: R, n: number) => Buffer.from(Array.from({ length: n }, () => int(r, 256)));

function mutate(r: R, b: Buffer): Buffer {
  const out = Buffer.from(b);
  const n = 1 + int(r, 3);
  for (let i = 0; i < n && out.length > 0; i++) {
    const at = int(r, out.length);
    const kind = int(r, 3);
    if (kind === 0) out[at] = int(r, 256);
    else if (kind === 1) out[at] = out[at]! ^ (1 << int(r, 8));
    else return out.subarray(0, at); // truncate
  }
  return out;
}

const clientFlags = () => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(C.NBD_FLAG_C_FIXED_NEWSTYLE | C.NBD_FLAG_C_NO_ZEROES);
  return b;
};

function randomOption(r: R): Buffer {
  const opt = pick(r, [1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 0, 0xffffffff]);
  const payloads = [
    Buffer.alloc(0),
    encodeInfoRequest(pick(r, ["", "x", "../etc/passwd", "\0"]), pick(r, [[], [0, 1, 2, 3], [9, 65535]])),
    encodeMetaContextRequest("", pick(r, [[], ["base:allocation"], ["base:"], ["nope:x", ""]])),
    bytes(r, int(r, 64)),
  ];
  const o = encodeOption(opt, pick(r, payloads));
  return r() < 0.4 ? mutate(r, o) : o;
}

function randomRequest(r: R, extended = false): Buffer {
  const type = r() < 0.8 ? int(r, 8) : int(r, 65536);
  let flags = r() < 0.7 ? 0 : int(r, 65536);
  if (extended && type === C.NBD_CMD_WRITE && r() < 0.8) flags |= C.NBD_CMD_FLAG_PAYLOAD_LEN;
  const offset = pick(r, [0, int(r, 1 << 20), 2 ** 40, 2 ** 53 - 1]);
  const length = pick(r, [0, 1, 512, 4096, int(r, 70000), 2 ** 31, 2 ** 32 - 1, ...(extended ? [2 ** 40, 2 ** 53 - 1] : [])]);
  let req = encodeRequest(flags, type === C.NBD_CMD_DISC && r() < 0.8 ? C.NBD_CMD_READ : type, BigInt(int(r, 1e9)), offset, length, extended);
  if (type === C.NBD_CMD_WRITE || (extended && flags & C.NBD_CMD_FLAG_PAYLOAD_LEN)) {
    const payload = bytes(r, Math.min(length, 8192));
    req = Buffer.concat([req, payload]);
  }
  return r() < 0.2 ? mutate(r, req) : req;
}

const go = () => [
  encodeOption(C.NBD_OPT_STRUCTURED_REPLY),
  encodeOption(C.NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest("", ["base:allocation"])),
  encodeOption(C.NBD_OPT_GO, encodeInfoRequest("", [])),
];

/** The bytes of one fuzz case. */
export function fuzzCase(r: R): Buffer[] {
  const frames: Buffer[] = [];
  const style = int(r, 8);
  if (style === 0) return [bytes(r, int(r, 200))];
  if (style === 4) {
    // Large reads in flight, then NBD_CMD_DISC (or the stream cut short): every reply owed goes out whole.
    const n = 1 + int(r, 6);
    const reads = Array.from({ length: n }, () =>
      encodeRequest(0, C.NBD_CMD_READ, BigInt(int(r, 1e9)), 0, pick(r, [65536, 1 << 20, 2 << 20])));
    return [clientFlags(), ...go(), ...reads, encodeRequest(0, C.NBD_CMD_DISC, 0n, 0, 0)];
  }
  if (style === 5) {
    // STARTTLS, then gone: after the ACK nothing, half a ClientHello, or garbage.
    const tail = pick(r, [Buffer.alloc(0), Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]), bytes(r, int(r, 64))]);
    return [clientFlags(), encodeOption(C.NBD_OPT_STARTTLS), tail];
  }
  if (style === 6) {
    // A stalled option: a header that claims more payload than is sent.
    const claimed = pick(r, [16, 1000, 65536, 1 << 20]);
    const sent = bytes(r, int(r, Math.min(claimed, 64)));
    return [clientFlags(), encodeOption(pick(r, [C.NBD_OPT_GO, C.NBD_OPT_INFO, C.NBD_OPT_SET_META_CONTEXT, 99]), sent, claimed)];
  }
  if (style === 7) {
    // Extended headers, then random 32-byte requests (compact ones are a bad magic there).
    frames.push(clientFlags(), encodeOption(C.NBD_OPT_EXTENDED_HEADERS));
    frames.push(encodeOption(C.NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest("", ["base:allocation"])));
    frames.push(encodeOption(C.NBD_OPT_GO, encodeInfoRequest("", [])));
    const nReq = int(r, 12);
    for (let i = 0; i < nReq; i++) frames.push(r() < 0.9 ? randomRequest(r, true) : randomRequest(r, false));
    return frames;
  }
  frames.push(r() < 0.9 ? clientFlags() : bytes(r, 4));
  const nOpts = int(r, 6);
  for (let i = 0; i < nOpts; i++) frames.push(randomOption(r));
  if (style >= 2) {
    frames.push(...go());
    const nReq = int(r, 12);
    for (let i = 0; i < nReq; i++) frames.push(randomRequest(r));
  }
  return frames;
}

/** Send one case, read replies for a moment, then close (abruptly or not). */
export function runCase(path: string, frames: Buffer[], r: R): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect(path);
    s.on("error", () => {});
    s.on("data", () => {});
    s.on("close", () => resolve());
    s.on("connect", () => {
      for (const f of frames) s.write(f);
      setTimeout(() => (r() < 0.5 ? s.destroy() : s.end()), int(r, 30));
      setTimeout(() => s.destroy(), 2000);
    });
  });
}
