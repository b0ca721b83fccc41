// evil filter (nbdkit-evil-filter, nbdkit >= 1.36): corrupt data as it is
// read, never what is written, so the layer below keeps the right bytes.
//
//   evil=cosmic-rays   bits flip at random on each read (probability p)
//   evil=stuck-bits    fixed bits of the disk read stuck high or low
//   evil=stuck-wires   fixed bit positions of every request read stuck
//
// evil-seed makes every run the same. Only pread is filtered, so sparse
// reads are served as data (holes are corrupted too, as nbdkit does).

import type { Filter } from "../../backend/types.js";
import { parseRate } from "../kit/probability.js";
import { Random, parseSeed, randomSeed } from "../kit/random.js";
import { Corrupter } from "./corrupt.js";

type Mode = "cosmic-rays" | "stuck-bits" | "stuck-wires";

const MODES: Record<string, Mode> = {
  "cosmic-rays": "cosmic-rays",
  cosmic: "cosmic-rays",
  "stuck-bits": "stuck-bits",
  "stuck-bit": "stuck-bits",
  stuck: "stuck-bits",
  "stuck-wires": "stuck-wires",
  "stuck-wire": "stuck-wires",
};

/** Distinct seeds for the two stuck spaces, so a disk's bits and a request's differ. */
const WIRES_SALT = 0x5717e5;

export default function createFilter(): Filter {
  let mode: Mode = "stuck-bits";
  let probability: number | null = null;
  let stuckProbability = 1;
  let seed: number | null = null;
  let c: Corrupter;

  const f: Filter = {
    name: "evil",
    version: "1.0.0",
    longname: "nbdstate evil filter",
    description: "Add random data corruption to reads.",
    configHelp:
      "evil=cosmic-rays|stuck-bits|stuck-wires\n" +
      "                               Set the mode (default: stuck-bits).\n" +
      "evil-probability=PROB          Probability of flipped or stuck bit.\n" +
      "evil-seed=SEED                 Random number seed.\n" +
      "evil-stuck-probability=PROB    Probability of stuck bit being stuck.",

    config(next, key, value) {
      switch (key) {
        case "evil":
        case "evil-mode": {
          const m = MODES[value];
          if (!m) throw new Error(`evil: unknown mode: '${value}' (use cosmic-rays, stuck-bits or stuck-wires)`);
          mode = m;
          return;
        }
        case "evil-probability":
          probability = parseRate(`evil: ${key}`, value);
          return;
        case "evil-stuck-probability":
          stuckProbability = parseRate(`evil: ${key}`, value);
          return;
        case "evil-seed":
          seed = parseSeed(`evil: ${key}`, value);
          return;
        default:
          return next(key, value);
      }
    },

    configComplete(next) {
      const p = probability ?? (mode === "stuck-wires" ? 1e-6 : 1e-8);
      const s = seed ?? randomSeed();
      c = new Corrupter(p, s, stuckProbability, new Random(s, 0xc05a1c));
      if (p > 0) f.pread = pread;
      return next();
    },
  };

  const pread: NonNullable<Filter["pread"]> = async (n, _h, buf, offset, flags) => {
    await n.pread(buf, offset, flags);
    if (mode === "cosmic-rays") c.flip(buf);
    else if (mode === "stuck-bits") c.stick(buf, offset, 0);
    else c.stick(buf, 0, WIRES_SALT);
  };

  return f;
}
