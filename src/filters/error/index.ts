// error filter (nbdkit-error-filter): make a chosen share of requests fail
// with a chosen NBD error, optionally only while a trigger file exists.
//
// Only the kinds of request with a rate above 0 get a callback (decided
// at configComplete); the others go straight to the layer below.

import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { NbdError, type Filter, type ServerServices } from "../../backend/types.js";
import {
  NBD_EINVAL, NBD_EIO, NBD_ENOMEM, NBD_ENOSPC, NBD_EPERM, NBD_ESHUTDOWN,
} from "../../protocol/constants.js";
import { parseRate } from "../kit/probability.js";
import { Random, parseSeed, randomSeed } from "../kit/random.js";

const ERRORS: Record<string, number> = {
  EPERM: NBD_EPERM,
  EIO: NBD_EIO,
  ENOMEM: NBD_ENOMEM,
  EINVAL: NBD_EINVAL,
  ENOSPC: NBD_ENOSPC,
  ESHUTDOWN: NBD_ESHUTDOWN,
};

/** The request kinds, named as in the parameters (error-pread-rate=...). */
const OPS = ["pread", "pwrite", "trim", "zero", "extents", "cache"] as const;
type Op = (typeof OPS)[number];

interface Settings {
  name: string;
  errno: number;
  rate: number;
  file: string | null;
}

export default function createFilter(): Filter {
  const settings = Object.fromEntries(
    OPS.map((op) => [op, { name: "EIO", errno: NBD_EIO, rate: 0, file: null } satisfies Settings]),
  ) as Record<Op, Settings>;
  let seed: number | null = null;
  let rng: Random;
  let server: ServerServices | null = null;

  const parseError = (key: string, value: string): string => {
    if (!(value in ERRORS)) throw new Error(`error: ${key}: unknown error name '${value}' (use ${Object.keys(ERRORS).join(", ")})`);
    return value;
  };

  /** Should this request fail? (nbdkit's random_error) */
  function inject(op: Op): NbdError | null {
    const s = settings[op];
    if (s.file !== null && !existsSync(s.file)) return null;
    if (s.rate < 1 && rng.float() >= s.rate) return null;
    const msg = `injecting ${s.name} error into ${op}`;
    server?.log(`error: ${msg}`);
    return new NbdError(s.errno, msg);
  }

  const f: Filter = {
    name: "error",
    version: "1.0.0",
    longname: "nbdstate error filter",
    description: "Inject errors into requests, for testing clients.",
    configHelp:
      "error=EPERM|EIO|ENOMEM|EINVAL|ENOSPC|ESHUTDOWN\n" +
      "                               The error indication to return.\n" +
      "error-rate=0%..100%|0..1|1:10  Rate of errors to generate.\n" +
      "error-file=TRIGGER             Set trigger filename.\n" +
      "error-seed=N                   Random seed (nbdstate; default: from the clock).\n" +
      "error-pread*, error-pwrite*, error-trim*, error-zero*, error-extents*, error-cache*\n" +
      "                               Apply settings only to read/write/etc",

    config(next, key, value) {
      if (key === "error-seed") {
        seed = parseSeed(`error: ${key}`, value);
        return;
      }
      const m = /^error(?:-(pread|pwrite|trim|zero|extents|cache))?(?:-(rate|file))?$/.exec(key);
      if (!m) return next(key, value);
      const ops: readonly Op[] = m[1] ? [m[1] as Op] : OPS;
      switch (m[2]) {
        case "rate": {
          const rate = parseRate(`error: ${key}`, value);
          for (const op of ops) settings[op].rate = rate;
          return;
        }
        case "file": {
          // Made absolute now: the trigger file probably does not exist yet.
          const file = resolve(value);
          for (const op of ops) settings[op].file = file;
          return;
        }
        default: {
          const name = parseError(key, value);
          for (const op of ops) Object.assign(settings[op], { name, errno: ERRORS[name]! });
        }
      }
    },

    configComplete(next) {
      rng = new Random(seed ?? randomSeed());
      install();
      return next();
    },

    afterFork(_lower, services) {
      server = services;
    },
  };

  function install(): void {
    const on = (op: Op) => settings[op].rate > 0;
    if (on("pread")) {
      f.pread = (n, _h, buf, off, fl) => {
        const e = inject("pread");
        if (e) throw e;
        return n.pread(buf, off, fl);
      };
      f.preadSparse = (n, _h, buf, off, fl) => {
        const e = inject("pread");
        if (e) throw e;
        return n.preadSparse(buf, off, fl);
      };
    }
    if (on("pwrite")) {
      f.pwrite = (n, _h, buf, off, fl) => {
        const e = inject("pwrite");
        if (e) throw e;
        return n.pwrite(buf, off, fl);
      };
    }
    if (on("trim")) {
      f.trim = (n, _h, count, off, fl) => {
        const e = inject("trim");
        if (e) throw e;
        return n.trim(count, off, fl);
      };
    }
    if (on("zero")) {
      f.zero = (n, _h, count, off, fl) => {
        const e = inject("zero");
        if (e) throw e;
        return n.zero(count, off, fl);
      };
    }
    if (on("extents")) {
      f.extents = (n, _h, count, off, fl) => {
        const e = inject("extents");
        if (e) throw e;
        return n.extents(count, off, fl);
      };
    }
    if (on("cache")) {
      f.cache = (n, _h, count, off, fl) => {
        const e = inject("cache");
        if (e) throw e;
        return n.cache(count, off, fl);
      };
    }
  }

  return f;
}
