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

function randomRequest(r: R): Buffer {
  const type = r() < 0.8 ? int(r, 8) : int(r, 65536);
  const flags = r() < 0.7 ? 0 : int(r, 65536);
  const offset = pick(r, [0, int(r, 1 << 20), 2 ** 40, 2 ** 53 - 1]);
  const length = pick(r, [0, 1, 512, 4096, int(r, 70000), 2 ** 31, 2 ** 32 - 1]);
  let req = encodeRequest(flags, type === C.NBD_CMD_DISC && r() < 0.8 ? C.NBD_CMD_READ : type, BigInt(int(r, 1e9)), offset, length);
  if (type === C.NBD_CMD_WRITE) {
    const payload = bytes(r, Math.min(length, 8192));
    req = Buffer.concat([req, payload]);
  }
  return r() < 0.2 ? mutate(r, req) : req;
}

/** The bytes of one fuzz case. */
export function fuzzCase(r: R): Buffer[] {
  const frames: Buffer[] = [];
  const style = int(r, 4);
  if (style === 0) return [bytes(r, int(r, 200))];
  frames.push(r() < 0.9 ? clientFlags() : bytes(r, 4));
  const nOpts = int(r, 6);
  for (let i = 0; i < nOpts; i++) frames.push(randomOption(r));
  if (style >= 2) {
    frames.push(encodeOption(C.NBD_OPT_STRUCTURED_REPLY));
    frames.push(encodeOption(C.NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest("", ["base:allocation"])));
    frames.push(encodeOption(C.NBD_OPT_GO, encodeInfoRequest("", [])));
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
