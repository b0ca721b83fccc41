// Delays as nbdkit_parse_delay (nbdkit >= 1.40) reads them, and a sleep
// that never wakes early.

const UNITS: Record<string, number> = { "": 1000, s: 1000, ms: 1, us: 1e-3, "μs": 1e-3, ns: 1e-6 };

/**
 * Parse a delay into milliseconds: "1", "1.2", "1.2s" (seconds), "120ms",
 * "1.2us" / "1.2μs" (microseconds), "1ns". nbdkit 1.32 took only whole
 * seconds and whole "NNms"; both still parse the same.
 */
export function parseDelay(what: string, value: string): number {
  const m = /^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(s|ms|us|μs|ns)?\s*$/.exec(value);
  if (!m) throw new Error(`${what}: could not parse delay '${value}' (use SECS, NNms, NNus or NNns)`);
  const ms = Number(m[1]) * UNITS[m[2] ?? ""]!;
  // nbdkit keeps seconds in an unsigned int.
  if (!Number.isFinite(ms) || ms > 0xffffffff * 1000) throw new Error(`${what}: delay is too large: '${value}'`);
  return ms;
}

/**
 * Sleep at least `ms` milliseconds. setTimeout may fire up to a
 * millisecond early by performance.now(); sleep again for what is left.
 */
export function sleepMs(ms: number): Promise<void> {
  const until = performance.now() + ms;
  return new Promise<void>((resolve) => {
    const wait = () => {
      const left = until - performance.now();
      if (left <= 0) resolve();
      else setTimeout(wait, Math.ceil(left));
    };
    wait();
  });
}
