// Rates and totals on the status page: per-connection throughput from the
// last two samples, the server-wide sparkline from the sums, closed
// connections kept in the totals, and request counters read when the core
// provides them (else null, and the sparkline is in bytes).
import { describe, expect, it } from "vitest";
import type { ConnectionStatus } from "../../src/actors/connection-settings.js";
import { HISTORY, Sampler } from "../../src/status/sampler.js";

type Conn = ConnectionStatus & { requests?: number; errors?: number; acceptedAt?: number };

function setup() {
  let t = 1_000_000;
  const conns: Conn[] = [];
  const s = new Sampler(() => conns, { now: () => t, periodMs: 1000 });
  return { s, conns, advance: (ms: number) => (t += ms), now: () => t };
}

const conn = (id: string, extra: Partial<Conn> = {}): Conn => ({ id, remote: "127.0.0.1:1", phase: "SERVING", inFlight: 0, bytesRead: 0, bytesWritten: 0, ...extra });

describe("Sampler", () => {
  it("gives each connection's read and write rate over the last sample interval", () => {
    const { s, conns, advance } = setup();
    const a = conn("conn-1");
    conns.push(a);
    s.sample();
    expect(s.rates(conns).get("conn-1")).toMatchObject({ readRate: 0, writeRate: 0, requests: null, errors: null, requestRate: null });
    a.bytesRead = 4096;
    a.bytesWritten = 1024;
    advance(500);
    s.sample();
    expect(s.rates(conns).get("conn-1")).toMatchObject({ readRate: 8192, writeRate: 2048 });
    advance(1000);
    s.sample();
    expect(s.rates(conns).get("conn-1")).toMatchObject({ readRate: 0, writeRate: 0 });
  });

  it("keeps a closed connection's counts in the totals and counts it", () => {
    const { s, conns, advance } = setup();
    conns.push(conn("conn-1", { bytesRead: 10, bytesWritten: 20 }), conn("conn-2", { bytesRead: 1 }));
    s.sample();
    conns.splice(0, 1);
    advance(1000);
    s.sample();
    expect(s.totals(conns)).toEqual({ connections: 2, bytesRead: 11, bytesWritten: 20, requests: null, errors: null });
  });

  it("has a sparkline in bytes per second without request counters, at most a minute of it", () => {
    const { s, conns, advance } = setup();
    const a = conn("conn-1");
    conns.push(a);
    s.sample();
    for (let i = 1; i <= HISTORY + 5; i++) {
      a.bytesRead += 100 * i;
      advance(1000);
      s.sample();
    }
    const act = s.activity();
    expect(act.unit).toBe("bytes");
    expect(act.perSecond).toHaveLength(HISTORY);
    expect(act.perSecond.at(-1)).toBe(100 * (HISTORY + 5));
    expect(act.perSecond[0]).toBe(100 * 6);
  });

  it("uses the core's request and error counters when there are any", () => {
    const { s, conns, advance, now } = setup();
    const a = conn("conn-1", { requests: 0, errors: 0, acceptedAt: now() - 90_000 });
    conns.push(a);
    s.sample();
    a.requests = 50;
    a.errors = 2;
    advance(1000);
    s.sample();
    expect(s.rates(conns).get("conn-1")).toMatchObject({ requests: 50, errors: 2, requestRate: 50, age: 91 });
    expect(s.activity()).toMatchObject({ unit: "requests", perSecond: [50] });
    expect(s.totals(conns)).toMatchObject({ requests: 50, errors: 2 });
  });

  it("ignores counters that are not counts", () => {
    const { s, conns } = setup();
    conns.push(conn("conn-1", { requests: Number.NaN, errors: -1 } as Partial<Conn>));
    s.sample();
    expect(s.rates(conns).get("conn-1")).toMatchObject({ requests: null, errors: null });
  });
});
