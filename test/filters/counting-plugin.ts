// A plugin for the shared/retry tests: counts open/prepare/finalize/close
// per (export, mode), and keeps its data PER CONTEXT (each handle has its
// own bytes). So a write made through one connection is visible through
// another only if both really use the same context below.
import { NbdError, type Plugin } from "../../src/backend/types.js";
import { NBD_EIO } from "../../src/protocol/constants.js";

export interface CountingHandle {
  id: number;
  key: string;
  data: Buffer;
  closed: boolean;
}

export interface Counts {
  open: number;
  prepare: number;
  finalize: number;
  close: number;
}

export interface CountingPlugin extends Plugin<CountingHandle> {
  counts: Counts;
  /** Counts per "rw:NAME" / "ro:NAME". */
  byKey: Map<string, Counts>;
  /** Everything that happened, in order ("open rw:", "pread 1", "close 1", ...). */
  events: string[];
  /** Make the next n data requests fail with EIO (the retry tests). */
  failNext: number;
  /** Make the next n opens fail. */
  failOpens: number;
  /** Delay of every pread, ms. */
  readDelay: number;
}

export function createCountingPlugin(size = 1 << 20): CountingPlugin {
  let nextId = 1;
  const zero = (): Counts => ({ open: 0, prepare: 0, finalize: 0, close: 0 });
  const p: CountingPlugin = {
    name: "counting",
    counts: zero(),
    byKey: new Map(),
    events: [],
    failNext: 0,
    failOpens: 0,
    readDelay: 0,
    defaultExport: () => "",
    open(readonly, exportName) {
      if (p.failOpens > 0) {
        p.failOpens--;
        p.events.push("open failed");
        throw new Error("counting: open failed (as asked)");
      }
      const key = `${readonly ? "ro" : "rw"}:${exportName}`;
      p.counts.open++;
      let k = p.byKey.get(key);
      if (!k) p.byKey.set(key, (k = zero()));
      k.open++;
      const h = { id: nextId++, key, data: Buffer.alloc(size), closed: false };
      p.events.push(`open ${key} #${h.id}`);
      return h;
    },
    prepare(h) {
      p.counts.prepare++;
      p.byKey.get(h.key)!.prepare++;
    },
    finalize(h) {
      p.counts.finalize++;
      p.byKey.get(h.key)!.finalize++;
      p.events.push(`finalize #${h.id}`);
    },
    close(h) {
      p.counts.close++;
      p.byKey.get(h.key)!.close++;
      h.closed = true;
      p.events.push(`close #${h.id}`);
    },
    getSize: () => size,
    canMultiConn: () => false,
    canFlush: () => true,
    canTrim: () => true,
    async pread(h, buf, offset) {
      check(h);
      if (p.readDelay) await new Promise((r) => setTimeout(r, p.readDelay));
      check(h);
      h.data.copy(buf, 0, offset, offset + buf.length);
      p.events.push(`pread #${h.id}`);
    },
    pwrite(h, buf, offset) {
      check(h);
      buf.copy(h.data, offset);
      p.events.push(`pwrite #${h.id}`);
    },
    flush(h) {
      check(h);
      p.events.push(`flush #${h.id}`);
    },
    trim(h, count, offset) {
      check(h);
      h.data.fill(0, offset, offset + count);
    },
    zero(h, count, offset) {
      check(h);
      h.data.fill(0, offset, offset + count);
    },
  };
  function check(h: CountingHandle): void {
    if (h.closed) throw new Error(`counting: request on closed handle #${h.id}`);
    if (p.failNext > 0) {
      p.failNext--;
      p.events.push(`fail #${h.id}`);
      throw new NbdError(NBD_EIO, "counting: injected failure");
    }
  }
  return p;
}
