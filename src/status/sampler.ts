// Once a second (only with --status-page), read every connection's
// counters: per-connection throughput is the difference between the last
// two samples, the server-wide activity sparkline is the difference of the
// sums, and a connection that goes keeps its last sampled counts in the
// totals. Requests are counted by the core as ConnectionStatus.requests /
// .errors; until it does, they read as null and activity is in bytes.

import type { ConnectionStatus } from "../actors/connection-settings.js";

/** Seconds of history the sparkline keeps. */
export const HISTORY = 60;

interface Counters {
  bytesRead: number;
  bytesWritten: number;
  requests: number | null;
  errors: number | null;
}

interface Sample {
  t: number;
  c: Counters;
}

export interface Totals {
  /** Connections accepted since the server started. */
  connections: number;
  bytesRead: number;
  bytesWritten: number;
  requests: number | null;
  errors: number | null;
}

export interface Activity {
  /** "requests" per second, or "bytes" (read + written) per second when requests are not counted. */
  unit: "requests" | "bytes";
  /** One value per sample period, oldest first, at most HISTORY. */
  perSecond: number[];
  periodMs: number;
}

export interface ConnectionRates {
  requests: number | null;
  errors: number | null;
  readRate: number;
  writeRate: number;
  requestRate: number | null;
  age: number;
}

const count = (v: unknown): number | null => (typeof v === "number" && Number.isFinite(v) && v >= 0 ? v : null);

/** The counters of a connection, read defensively: requests and errors may not be there. */
export function countersOf(c: ConnectionStatus): Counters {
  const x = c as ConnectionStatus & { requests?: unknown; errors?: unknown };
  return { bytesRead: count(c.bytesRead) ?? 0, bytesWritten: count(c.bytesWritten) ?? 0, requests: count(x.requests), errors: count(x.errors) };
}

/** When the core says when a connection was accepted (ms since the epoch). */
function acceptedAtOf(c: ConnectionStatus): number | undefined {
  const v = (c as ConnectionStatus & { acceptedAt?: unknown }).acceptedAt;
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}

/** A rate per second, to 0.1 (bytes/s are shown rounded; request rates may be small). */
const perSec = (d: number, ms: number) => (ms > 0 ? Math.round(Math.max(0, (d * 1000) / ms) * 10) / 10 : 0);

export class Sampler {
  /** The last two samples of each live connection, newest last. */
  private samples = new Map<string, Sample[]>();
  private firstSeen = new Map<string, number>();
  private closed: Totals = { connections: 0, bytesRead: 0, bytesWritten: 0, requests: null, errors: null };
  private history: number[] = [];
  private unit: Activity["unit"] = "bytes";
  private lastTotal: { t: number; v: number } | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly now: () => number;
  readonly periodMs: number;

  constructor(
    private readonly source: () => ConnectionStatus[],
    opts: { now?: () => number; periodMs?: number } = {},
  ) {
    this.now = opts.now ?? Date.now;
    this.periodMs = opts.periodMs ?? 1000;
  }

  start(): void {
    if (this.timer) return;
    this.sample();
    this.timer = setInterval(() => this.sample(), this.periodMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private see(id: string, t: number): void {
    if (!this.firstSeen.has(id)) this.firstSeen.set(id, t);
  }

  /** Take one sample now (the timer calls this; tests call it directly). */
  sample(): void {
    const t = this.now();
    const conns = this.source();
    const live = new Set<string>();
    for (const c of conns) {
      live.add(c.id);
      this.see(c.id, t);
      const s = this.samples.get(c.id) ?? [];
      s.push({ t, c: countersOf(c) });
      if (s.length > 2) s.shift();
      this.samples.set(c.id, s);
    }
    for (const [id, s] of this.samples) {
      if (live.has(id)) continue;
      // Gone: its last sampled counts stay in the totals.
      const c = s[s.length - 1]!.c;
      this.closed.bytesRead += c.bytesRead;
      this.closed.bytesWritten += c.bytesWritten;
      if (c.requests !== null) this.closed.requests = (this.closed.requests ?? 0) + c.requests;
      if (c.errors !== null) this.closed.errors = (this.closed.errors ?? 0) + c.errors;
      this.samples.delete(id);
    }
    for (const id of this.firstSeen.keys()) {
      if (!live.has(id)) {
        this.firstSeen.delete(id);
        this.closed.connections++;
      }
    }

    const totals = this.totals(conns, false);
    if (this.unit === "bytes" && totals.requests !== null) {
      // The core counts requests: from now on the sparkline is in requests.
      this.unit = "requests";
      this.history = [];
      this.lastTotal = undefined;
    }
    const v = this.unit === "requests" ? (totals.requests ?? 0) : totals.bytesRead + totals.bytesWritten;
    if (this.lastTotal) {
      this.history.push(perSec(v - this.lastTotal.v, t - this.lastTotal.t));
      if (this.history.length > HISTORY) this.history.shift();
    }
    this.lastTotal = { t, v };
  }

  /** Totals since the start: the closed connections' plus the live ones' current counters. */
  totals(conns: ConnectionStatus[], countLive = true): Totals {
    const out = { ...this.closed };
    for (const c of conns) {
      const k = countersOf(c);
      out.bytesRead += k.bytesRead;
      out.bytesWritten += k.bytesWritten;
      if (k.requests !== null) out.requests = (out.requests ?? 0) + k.requests;
      if (k.errors !== null) out.errors = (out.errors ?? 0) + k.errors;
    }
    if (countLive) out.connections += conns.length;
    return out;
  }

  /** Per-connection counters and rates, from the last two samples. */
  rates(conns: ConnectionStatus[], now = this.now()): Map<string, ConnectionRates> {
    const out = new Map<string, ConnectionRates>();
    for (const c of conns) {
      const k = countersOf(c);
      const s = this.samples.get(c.id);
      const since = acceptedAtOf(c) ?? this.firstSeen.get(c.id) ?? now;
      let readRate = 0;
      let writeRate = 0;
      let requestRate: number | null = k.requests === null ? null : 0;
      if (s && s.length === 2) {
        const [a, b] = s as [Sample, Sample];
        const dt = b.t - a.t;
        readRate = perSec(b.c.bytesRead - a.c.bytesRead, dt);
        writeRate = perSec(b.c.bytesWritten - a.c.bytesWritten, dt);
        if (a.c.requests !== null && b.c.requests !== null) requestRate = perSec(b.c.requests - a.c.requests, dt);
      }
      out.set(c.id, { requests: k.requests, errors: k.errors, readRate, writeRate, requestRate, age: Math.max(0, Math.floor((now - since) / 1000)) });
    }
    return out;
  }

  activity(): Activity {
    return { unit: this.unit, perSecond: [...this.history], periodMs: this.periodMs };
  }
}
