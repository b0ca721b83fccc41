// A transmission worker thread (pool.ts starts it): its own instance of
// the plugin, brought up as the command line does (load, config with the
// main thread's parameters, configComplete, getReady, afterFork), joined
// to the main instance's data; then, per connection handed over, a
// context opened through its stack and the same data loop the main
// thread runs (transmission.ts) on a socket made from the dup'ed fd.

import net from "node:net";
import { parentPort, workerData, type MessagePort } from "node:worker_threads";
import { ByteQueue } from "../actors/byte-queue.js";
import { SocketReader } from "../actors/socket-reader.js";
import { Transmission } from "../actors/transmission.js";
import { errorMessage } from "../backend/errors.js";
import { Stack } from "../backend/stack.js";
import { loadPlugin } from "../cli/load.js";
import { libc } from "../sys/libc.js";
import { collectStartupHeap, trimSoon } from "../sys/trim.js";
import { COUNTER, type ConnectionHandOff, type LoopCommand, type LoopReport, type WorkerInit, type WorkerReport } from "./messages.js";

const init = workerData as WorkerInit;
const report = (m: WorkerReport) => parentPort!.postMessage(m);

/** Counters of every live connection, copied for the main thread's status page. */
const live = new Set<() => void>();
setInterval(() => {
  for (const f of live) f();
}, 250).unref();

async function bringUp(): Promise<Stack> {
  const loaded = await loadPlugin(init.plugin);
  const stack = new Stack(loaded.layer, [], { error: (m) => report({ type: "error", message: m }) });
  await stack.load();
  for (const [k, v] of init.params) await stack.config(k, v);
  await stack.configComplete();
  await stack.getReady();
  await stack.afterFork();
  const threads = loaded.layer.threads;
  if (!threads) throw new Error(`plugin ${loaded.layer.name} cannot be served from worker threads`);
  threads.join(init.state);
  return stack;
}

function serve(stack: Stack, h: ConnectionHandOff, port: MessagePort): void {
  const tell = (m: LoopReport) => port.postMessage(m);
  const counters = new Float64Array(h.counters);
  const reader = new SocketReader();
  const socket = new net.Socket({
    fd: h.fd,
    allowHalfOpen: true,
    readable: true,
    writable: true,
    manualStart: true,
    onread: { buffer: reader.next, callback: reader.callback },
  } as net.SocketConstructorOpts & { manualStart: boolean });
  const queue = new ByteQueue();
  if (h.leftover.length > 0) queue.push(Buffer.from(h.leftover.buffer, h.leftover.byteOffset, h.leftover.length));
  let tx: Transmission | null = null;
  let closed = false;
  let opened: Awaited<ReturnType<Stack["open"]>> | null = null;
  const pending: LoopCommand[] = [];

  const copyCounters = () => {
    if (!tx) return;
    counters[COUNTER.inFlight] = tx.inFlight;
    counters[COUNTER.bytesRead] = tx.bytesRead.value;
    counters[COUNTER.bytesWritten] = tx.bytesWritten.value;
    counters[COUNTER.requests] = tx.requests;
    counters[COUNTER.errors] = tx.errors;
  };
  live.add(copyCounters);

  const onClose = () => {
    if (closed) return;
    closed = true;
    queue.end();
    tx?.clientClosed();
    copyCounters();
    live.delete(copyCounters);
    if (opened) void stack.close(opened, true).catch((e: unknown) => tell({ type: "log", msg: `close: ${errorMessage(e)}` }));
    tell({ type: "closed" });
    port.close();
    // As on the main thread: this thread's heap and malloc arena give back what the connection held.
    trimSoon(() => live.size > 0);
  };
  socket.on("error", (e) => tell({ type: "log", msg: e.message }));
  socket.on("close", onClose);
  socket.on("end", () => {
    queue.end();
    tx?.inputEnded();
  });

  const run = (c: LoopCommand) => {
    const t = tx!;
    switch (c.op) {
      case "start":
        t.start();
        if (queue.ended) t.inputEnded();
        return;
      case "refuse":
        return t.refuse();
      case "stopReading":
        return t.stopReading();
      case "awaitReplies":
        return void t.awaitReplies().then(() => tell({ type: "done", n: c.n }));
      case "awaitQuiet":
        return void t.awaitQuiet().then(() => tell({ type: "done", n: c.n }));
      case "flushAndEnd": {
        t.finish();
        copyCounters();
        if (socket.destroyed || socket.writableFinished) return tell({ type: "done", n: c.n });
        const timer = setTimeout(() => tell({ type: "done", n: c.n }), c.timeoutMs);
        const done = () => {
          clearTimeout(timer);
          tell({ type: "done", n: c.n });
        };
        socket.once("finish", done);
        socket.once("close", done);
        socket.end();
        return;
      }
      case "destroy":
        return void socket.destroy();
    }
  };
  port.on("message", (c: LoopCommand) => {
    if (closed) return;
    if (c.op === "destroy") return void socket.destroy();
    if (tx) run(c);
    else pending.push(c);
  });

  stack.open(h.readonly, h.exportName, false).then(
    (o) => {
      opened = o;
      if (closed) return void stack.close(o, false).catch(() => {});
      tx = new Transmission(socket, queue, {
        opened: o, info: h.info, structuredReplies: h.structuredReplies, extendedHeaders: h.extendedHeaders, metaContexts: h.metaContexts,
      }, {
        maxInFlight: h.maxInFlight,
        maxInFlightBytes: h.maxInFlightBytes,
        log: (msg) => tell({ type: "log", msg }),
        failed: (command, e) => tell({ type: "failed", command, message: errorMessage(e) }),
        emit: (ev) => tell({ type: "event", ev }),
      }, reader);
      reader.sink = {
        bytes: (chunk) => {
          queue.push(chunk);
          tx!.data();
        },
        holds: (b) => queue.holds(b),
      };
      socket.resume();
      if (h.ended) queue.end();
      for (const c of pending.splice(0)) run(c);
    },
    (e: unknown) => {
      // The main thread's machine hears a FATAL: the connection ends there as it would here.
      tell({ type: "event", ev: { type: "FATAL", reason: `worker open: ${errorMessage(e)}` } });
      socket.destroy();
    },
  );
}

bringUp().then(
  (stack) => {
    parentPort!.on("message", (m: ConnectionHandOff & { port: MessagePort }) => {
      if (m.type !== "connection") return;
      try {
        serve(stack, m, m.port);
      } catch (e) {
        // The connection cannot be served here: cut (its fd closed), and the main thread told.
        libc()?.close(m.fd);
        m.port.postMessage({ type: "log", msg: `worker: ${errorMessage(e)}` } satisfies LoopReport);
        m.port.postMessage({ type: "closed" } satisfies LoopReport);
        m.port.close();
      }
    });
    collectStartupHeap();
    report({ type: "ready" });
  },
  (e: unknown) => report({ type: "failed", message: errorMessage(e) }),
);
