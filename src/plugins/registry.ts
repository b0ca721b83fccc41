// Built-in plugins by name. Each entry loads its module on demand and
// returns the module's factory (call it for a fresh Plugin object).

import type { Plugin } from "../backend/types.js";

// A null-prototype object, so names like "constructor" are not found.
export const builtinPlugins: Record<string, () => Promise<() => Plugin>> = Object.assign(Object.create(null), {
  curl: async () => (await import("./curl/index.js")).default,
  data: async () => (await import("./data/index.js")).default,
  eval: async () => (await import("./eval/index.js")).default,
  file: async () => (await import("./file/index.js")).default,
  floppy: async () => (await import("./floppy/index.js")).default,
  full: async () => (await import("./full/index.js")).default,
  info: async () => (await import("./info/index.js")).default,
  iso: async () => (await import("./iso/index.js")).default,
  linuxdisk: async () => (await import("./linuxdisk/index.js")).default,
  memory: async () => (await import("./memory/index.js")).default,
  nbd: async () => (await import("./nbd/index.js")).default,
  null: async () => (await import("./null/index.js")).default,
  ondemand: async () => (await import("./ondemand/index.js")).default,
  ones: async () => (await import("./ones/index.js")).default,
  partitioning: async () => (await import("./partitioning/index.js")).default,
  pattern: async () => (await import("./pattern/index.js")).default,
  random: async () => (await import("./random/index.js")).default,
  S3: async () => (await import("./S3/index.js")).default,
  sh: async () => (await import("./sh/index.js")).default,
  "sparse-random": async () => (await import("./sparse-random/index.js")).default,
  split: async () => (await import("./split/index.js")).default,
  ssh: async () => (await import("./ssh/index.js")).default,
  tmpdisk: async () => (await import("./tmpdisk/index.js")).default,
});
