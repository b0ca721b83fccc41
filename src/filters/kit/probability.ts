// Probabilities as nbdkit_parse_probability (nbdkit >= 1.36) reads them:
// "0.1", "1e-1", "10%", "1:10" and "1/10" all mean one in ten.

const NUM = String.raw`[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?`;
const FORMS = new RegExp(String.raw`^\s*(${NUM})\s*(?:(%)|[:/]\s*(${NUM}))?\s*$`);

/** Parse a probability; results above 1 are returned (the caller decides). */
export function parseProbability(what: string, value: string): number {
  const m = FORMS.exec(value);
  if (!m) throw new Error(`${what}: could not parse probability '${value}'`);
  let p = Number(m[1]);
  if (m[2]) p /= 100;
  else if (m[3] !== undefined) {
    const d = Number(m[3]);
    if (d === 0) throw new Error(`${what}: division by zero in '${value}'`);
    p /= d;
  }
  if (!Number.isFinite(p) || p < 0) throw new Error(`${what}: could not parse probability '${value}'`);
  return p;
}

/** parseProbability, refusing anything above 1 (100%). */
export function parseRate(what: string, value: string): number {
  const p = parseProbability(what, value);
  if (p > 1) throw new Error(`${what}: probability out of range, should be [0..1]: '${value}'`);
  return p;
}
