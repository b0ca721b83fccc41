// Transmission worker threads, main side. Negotiation always happens on
// the main thread, where the machines run; at NBD_OPT_GO a plain-socket
// connection may move to a worker: its fd is dup'ed and sent there with
// the bytes already read, and the worker runs the same data loop
// (transmission.ts) against its own instance of the plugin, which shares
// the main one's data (PluginThreads). The main thread keeps the
// connection's machines: a RemoteLoop stands in for the loop, forwarding
// the machine's commands and the loop's phase events over a MessagePort.
//
// Connections go round the threads in turn, this one included: a
// multi-conn client (nbdcopy opens 4) is served from every core.

import { MessageChannel, Worker, type MessagePort } from "node:worker_threads";
import type { HandOff, RemoteLoop, TransmissionThreads } from "../actors/transmission-loop.js";
import { fdOf } from "../actors/socket-reader.js";
import { libc } from "../sys/libc.js";
import { COUNTER, COUNTERS, type ConnectionHandOff, type LoopCommand, type LoopReport, type WorkerInit, type WorkerReport } from "./messages.js";

interface Slot {
  worker: Worker;
  ready: boolean;
}

export interface PoolOptions extends WorkerInit {
  /** Worker threads to start. */
  count: number;
  /** Lines to always show (a worker that fails, a connection it cannot open). */
  error: (msg: string) => void;
  log: (msg: string) => void;
}

export class TransmissionWorkers implements TransmissionThreads {
  private readonly slots: Slot[] = [];
  /** Which thread the next connection goes to: 0 is this one, i + 1 is slots[i]. */
  private turn = 0;
  private closing = false;
  /** Resolves once every worker is ready or has failed (the server listens after). */
  readonly settled: Promise<void>;

  constructor(private readonly o: PoolOptions) {
    // koffi and libc load now, not at the first hand-off (its dup): that
    // took the first client's connection 5 ms.
    libc();
    const init: WorkerInit = { plugin: o.plugin, params: o.params, state: o.state };
    const settling: Promise<void>[] = [];
    for (let i = 0; i < o.count; i++) {
      const worker = new Worker(new URL("./worker.js", import.meta.url), { workerData: init, resourceLimits: { maxYoungGenerationSizeMb: 12 } });
      const slot: Slot = { worker, ready: false };
      let settle!: () => void;
      settling.push(new Promise<void>((r) => (settle = r)));
      worker.on("message", (m: WorkerReport) => {
        if (m.type === "ready") {
          slot.ready = true;
          o.log(`transmission worker ${i + 1} ready`);
          settle();
        } else if (m.type === "failed") {
          o.error(`transmission worker ${i + 1}: ${m.message} (its connections stay on the main thread)`);
          settle();
        } else o.error(`transmission worker ${i + 1}: ${m.message}`);
      });
      worker.on("error", (e) => {
        slot.ready = false;
        o.error(`transmission worker ${i + 1}: ${e.message}`);
        settle();
      });
      worker.on("exit", () => {
        slot.ready = false;
        settle();
      });
      this.slots.push(slot);
    }
    // Once up, a worker does not keep the process alive: the server's
    // listeners do (until then the start awaits it).
    this.settled = Promise.all(settling).then(() => {
      for (const s of this.slots) s.worker.unref();
    });
  }

  get workers(): number {
    return this.slots.length;
  }

  handOff(h: HandOff): RemoteLoop | null {
    if (this.closing) return null;
    const n = this.slots.length + 1;
    const t = this.turn;
    this.turn = (t + 1) % n;
    const slot = t === 0 ? undefined : this.slots[t - 1];
    if (!slot?.ready) return null;
    const fd = fdOf(h.socket);
    const c = libc();
    if (fd < 0 || !c) return null;
    // This thread reads no more of the socket; its copy of the fd stays
    // open (closed with the connection), the worker reads and writes its own.
    h.socket.pause();
    const dup = c.dup(fd) as number;
    if (dup < 0) {
      h.socket.resume();
      return null;
    }
    const leftover = h.queue.length > 0 ? Buffer.from(h.queue.take(h.queue.length)) : new Uint8Array(0);
    const counters = new SharedArrayBuffer(COUNTERS * 8);
    const { port1, port2 } = new MessageChannel();
    const msg: ConnectionHandOff = {
      type: "connection", id: h.id, fd: dup, leftover, ended: h.queue.ended, exportName: h.exportName, readonly: h.readonly,
      info: h.info, structuredReplies: h.structuredReplies, extendedHeaders: h.extendedHeaders, metaContexts: h.metaContexts,
      maxInFlight: h.maxInFlight, maxInFlightBytes: h.maxInFlightBytes, counters,
    };
    slot.worker.postMessage({ ...msg, port: port2 }, [port2]);
    return new Remote(port1, new Float64Array(counters), h);
  }

  /** Stop every worker (the server is done). */
  async close(): Promise<void> {
    this.closing = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate().catch(() => 0)));
  }
}

/** The loop of a connection served by a worker, as the connection's machines see it. */
class Remote implements RemoteLoop {
  private waits = new Map<number, () => void>();
  private next = 0;
  private gone = false;

  constructor(
    private readonly port: MessagePort,
    private readonly counters: Float64Array,
    private readonly h: HandOff,
  ) {
    // The port keeps the process alive while the connection lives (this
    // thread's copy of the socket is paused, which does not).
    port.on("message", (m: LoopReport) => this.report(m));
    // The worker died (or let go of the port) without saying "closed": the connection is over.
    port.on("close", () => {
      if (!this.gone) this.report({ type: "closed" });
    });
  }

  get inFlight(): number {
    return this.counters[COUNTER.inFlight]!;
  }
  get requests(): number {
    return this.counters[COUNTER.requests]!;
  }
  get errors(): number {
    return this.counters[COUNTER.errors]!;
  }
  get bytesRead(): { value: number } {
    return { value: this.counters[COUNTER.bytesRead]! };
  }
  get bytesWritten(): { value: number } {
    return { value: this.counters[COUNTER.bytesWritten]! };
  }

  private report(m: LoopReport): void {
    switch (m.type) {
      case "event":
        return this.h.emit(m.ev);
      case "failed":
        return this.h.failed(m.command, m.message);
      case "log":
        return this.h.log(m.msg);
      case "done": {
        const w = this.waits.get(m.n);
        this.waits.delete(m.n);
        return w?.();
      }
      case "closed":
        this.gone = true;
        for (const w of this.waits.values()) w();
        this.waits.clear();
        this.port.close();
        return this.h.closed();
    }
  }

  private send(c: LoopCommand): void {
    if (!this.gone) this.port.postMessage(c);
  }

  private ask(make: (n: number) => LoopCommand): Promise<void> {
    if (this.gone) return Promise.resolve();
    const n = ++this.next;
    return new Promise((resolve) => {
      this.waits.set(n, resolve);
      this.send(make(n));
    });
  }

  start(): void {
    this.send({ op: "start" });
  }
  refuse(): void {
    this.send({ op: "refuse" });
  }
  stopReading(): void {
    this.send({ op: "stopReading" });
  }
  awaitReplies(): Promise<void> {
    return this.ask((n) => ({ op: "awaitReplies", n }));
  }
  awaitQuiet(): Promise<void> {
    return this.ask((n) => ({ op: "awaitQuiet", n }));
  }
  flushAndEnd(timeoutMs: number): Promise<void> {
    return this.ask((n) => ({ op: "flushAndEnd", n, timeoutMs }));
  }
  destroy(): void {
    this.send({ op: "destroy" });
  }
  // The worker reads the socket and sees its end and close itself.
  data(): void {}
  inputEnded(): void {}
  finish(): void {}
  clientClosed(): void {}
}
