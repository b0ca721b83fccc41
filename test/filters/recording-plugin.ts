// A RAM plugin for the policy filter tests that records every data call
// it gets, with its handle, range and flags ("pwrite #1 0+512 fua"), so a
// test can see exactly what a filter sent down. Its capabilities are
// settable (FUA mode, flush, zero, multi-conn), and it can count how many
// calls run at once.
import { FLAG_FAST_ZERO, FLAG_FUA, FLAG_MAY_TRIM, FLAG_REQ_ONE, type Extent, type FuaMode, type Plugin } from "../../src/backend/types.js";

export interface RecordingOptions {
  size?: number;
  fua?: FuaMode;
  flush?: boolean;
  zero?: boolean;
  fastZero?: boolean;
  multiConn?: boolean;
  /** Every data call waits this long (ms), so calls can overlap. */
  delay?: number;
  /** Extents as the plugin reports them, for every request (default: one data extent). */
  extents?: (count: number, offset: number) => Extent[];
}

export interface RecordingHandle {
  id: number;
}

export interface RecordingPlugin extends Plugin<RecordingHandle> {
  calls: string[];
  data: Buffer;
  opens: number;
  /** Most data calls that were running at the same time. */
  maxConcurrent: number;
}

function flagNames(f: number): string {
  const n: string[] = [];
  if (f & FLAG_FUA) n.push("fua");
  if (f & FLAG_MAY_TRIM) n.push("may_trim");
  if (f & FLAG_FAST_ZERO) n.push("fast");
  if (f & FLAG_REQ_ONE) n.push("req_one");
  return n.length ? ` ${n.join(",")}` : "";
}

export function createRecordingPlugin(o: RecordingOptions = {}): RecordingPlugin {
  const size = o.size ?? 1 << 20;
  let nextId = 1;
  let running = 0;
  const p: RecordingPlugin = {
    name: "recording",
    calls: [],
    data: Buffer.alloc(size),
    opens: 0,
    maxConcurrent: 0,
    open() {
      p.opens++;
      return { id: nextId++ };
    },
    getSize: () => size,
    canFlush: () => o.flush ?? true,
    canFua: () => o.fua ?? "native",
    canZero: () => o.zero ?? true,
    canFastZero: () => o.fastZero ?? true,
    canMultiConn: () => o.multiConn ?? false,
    canTrim: () => true,
    canExtents: () => true,
    canCache: () => "native",
    async pread(h, buf, off, fl) {
      await step(`pread #${h.id} ${off}+${buf.length}${flagNames(fl)}`);
      p.data.copy(buf, 0, off, off + buf.length);
    },
    async pwrite(h, buf, off, fl) {
      await step(`pwrite #${h.id} ${off}+${buf.length}${flagNames(fl)}`);
      buf.copy(p.data, off);
    },
    async flush(h) {
      await step(`flush #${h.id}`);
    },
    async trim(h, count, off, fl) {
      await step(`trim #${h.id} ${off}+${count}${flagNames(fl)}`);
      p.data.fill(0, off, off + count);
    },
    async zero(h, count, off, fl) {
      await step(`zero #${h.id} ${off}+${count}${flagNames(fl)}`);
      p.data.fill(0, off, off + count);
    },
    async extents(h, count, off, fl) {
      await step(`extents #${h.id} ${off}+${count}${flagNames(fl)}`);
      return o.extents ? o.extents(count, off) : [{ length: count, type: 0 }];
    },
    async cache(h, count, off) {
      await step(`cache #${h.id} ${off}+${count}`);
    },
  };
  if (o.zero === false) delete p.zero;
  if (o.flush === false) delete p.flush;

  async function step(call: string): Promise<void> {
    p.calls.push(call);
    running++;
    p.maxConcurrent = Math.max(p.maxConcurrent, running);
    try {
      if (o.delay) await new Promise((r) => setTimeout(r, o.delay));
    } finally {
      running--;
    }
  }
  return p;
}
