// An in-process nbdstate server (src/actors/server.ts startServer over a
// real Stack) on a private unix socket, with a memory-backed plugin the
// tests can steer: listing can be made to fail, the export "missing" does
// not exist, and reads can be held at a gate to keep requests in flight.
// Tests may serve their own option records (optionRecords) and -s.
import { join } from "node:path";
import type { InspectionEvent } from "xstate";
import { startServer, type RunningServer } from "../../src/actors/server.js";
import { Stack } from "../../src/backend/stack.js";
import { NbdError, type Plugin } from "../../src/backend/types.js";
import { NBD_EPERM } from "../../src/protocol/constants.js";
import type { TlsMode } from "../../src/machines/options.js";
import type { OptionRecord } from "../../src/options/record.js";
import createMemory, { type MemoryHandle } from "../../src/plugins/memory/index.js";
import { makeTmpDir, removeTmpDir, waitFor } from "../helpers/server.js";
import { deferred, type Deferred } from "./helpers.js";
import { runningStack } from "../helpers/stack.js";

export const DESCRIPTION = "the model disk";
export const SIZE = 1024 * 1024;
/** A metadata context the model plugin serves besides base:allocation. */
export const DIRTY_BITMAP = "qemu:dirty-bitmap:model";
/** The block size constraints the model plugin reports (NBD_INFO_BLOCK_SIZE). */
export const BLOCK_SIZE = { minimum: 1, preferred: 4096, maximum: 32 * 1024 * 1024 };

export interface Control {
  /** NBD_OPT_LIST fails while set ("policy": refused with EPERM, as exportname-list=error). */
  failList: boolean | "policy";
  /** While set, every pread waits for it. */
  gate: Deferred<void> | null;
  /** While set, every open waits for it. */
  openGate: Deferred<void> | null;
  /** preads that reached the plugin (waiting at the gate or done). */
  reads: number;
  opens: number;
  closes: number;
  log: string[];
}

export interface InProcess {
  srv: RunningServer;
  sock: string;
  ctl: Control;
  /** Hold reads from now on; returns the function that lets them through. */
  holdReads(): () => void;
  /** Hold opens from now on; returns the function that lets them through. */
  holdOpens(): () => void;
  /** The live connections the server knows (its status registry). */
  phases(): string[];
  /** Wait until the server has forgotten every connection. */
  idle(timeoutMs?: number): Promise<boolean>;
  stop(): Promise<void>;
}

function modelPlugin(ctl: Control): Plugin<MemoryHandle> {
  // Without the memory plugin's preadSparse and direct memory: every read must reach the pread below.
  const { preadSparse: _sparse, memory: _memory, ...mem } = createMemory();
  return {
    ...mem,
    name: "modelmem",
    listExports() {
      if (ctl.failList === "policy") throw new NbdError(NBD_EPERM, "listing is not allowed here");
      if (ctl.failList) throw new Error("listing failed on purpose");
      return [{ name: "", description: DESCRIPTION }];
    },
    async open(readonly, name, tls) {
      if (ctl.openGate) await ctl.openGate.promise;
      if (name === "missing") throw new Error("no such export");
      ctl.opens++;
      return mem.open(readonly, name, tls);
    },
    close() {
      ctl.closes++;
    },
    exportDescription: () => DESCRIPTION,
    blockSize: () => BLOCK_SIZE,
    metaContexts: () => [DIRTY_BITMAP],
    // Nothing is dirty.
    contextExtents: (_h, _context, count) => [{ length: count, type: 0 }],
    async pread(h, buf, offset, flags) {
      ctl.reads++;
      if (ctl.gate) await ctl.gate.promise;
      return mem.pread(h, buf, offset, flags);
    },
  };
}

export interface InProcessOptions {
  maxOptions?: number;
  tls?: TlsMode;
  threads?: number;
  handshakeTimeoutMs?: number;
  optionTimeoutMs?: number;
  shutdownGraceMs?: number;
  /** -s: one connection, then the server stops. */
  singleConnection?: boolean;
  /** The option records served (default: the built-in ones). */
  optionRecords?: readonly OptionRecord[];
  /** XState inspection of every actor the server runs. */
  inspect?: (ev: InspectionEvent) => void;
}

export async function startInProcess(o: InProcessOptions = {}): Promise<InProcess> {
  const ctl: Control = { failList: false, gate: null, openGate: null, reads: 0, opens: 0, closes: 0, log: [] };
  const stack = await runningStack(modelPlugin(ctl), [], [["size", String(SIZE)]]);
  const dir = makeTmpDir("nbdstate-model-");
  const sock = join(dir, "nbd.sock");
  let srv: RunningServer;
  try {
    srv = await startServer(stack, {
      listeners: [{ kind: "unix", path: sock }],
      readonly: false,
      threads: o.threads ?? 16,
      tls: o.tls ?? "off",
      maxOptions: o.maxOptions,
      handshakeTimeoutMs: o.handshakeTimeoutMs,
      optionTimeoutMs: o.optionTimeoutMs,
      shutdownGraceMs: o.shutdownGraceMs,
      singleConnection: o.singleConnection,
      optionRecords: o.optionRecords,
      inspect: o.inspect,
      log: (m) => ctl.log.push(m),
      error: (m) => ctl.log.push(m),
    });
  } catch (e) {
    // The server refused to start (a test checks why): leave nothing behind.
    await stack.unload();
    removeTmpDir(dir);
    throw e;
  }
  let stopped = false;
  return {
    srv,
    sock,
    ctl,
    holdReads() {
      const g = deferred<void>();
      ctl.gate = g;
      return () => {
        ctl.gate = null;
        g.resolve();
      };
    },
    holdOpens() {
      const g = deferred<void>();
      ctl.openGate = g;
      return () => {
        ctl.openGate = null;
        g.resolve();
      };
    },
    phases: () => srv.connections().map((c) => c.phase),
    idle: (timeoutMs = 5000) => waitFor(() => srv.connections().length === 0, timeoutMs, 5),
    async stop() {
      if (stopped) return;
      stopped = true;
      ctl.gate?.resolve();
      ctl.openGate?.resolve();
      await srv.shutdown();
      await stack.unload();
      removeTmpDir(dir);
    },
  };
}
