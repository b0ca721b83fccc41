// Built-in filters by name. Each entry loads its module on demand and
// returns the module's factory (call it for a fresh Filter object).

import type { Filter } from "../backend/types.js";

// A null-prototype object, so names like "constructor" are not found.
export const builtinFilters: Record<string, () => Promise<() => Filter>> = Object.assign(Object.create(null), {
  bzip2: async () => (await import("./bzip2/index.js")).default,
  exportname: async () => (await import("./exportname/index.js")).default,
  ext2: async () => (await import("./ext2/index.js")).default,
  gzip: async () => (await import("./gzip/index.js")).default,
  ip: async () => (await import("./ip/index.js")).default,
  limit: async () => (await import("./limit/index.js")).default,
  luks: async () => (await import("./luks/index.js")).default,
  lzip: async () => (await import("./lzip/index.js")).default,
  offset: async () => (await import("./offset/index.js")).default,
  partition: async () => (await import("./partition/index.js")).default,
  qcow2dec: async () => (await import("./qcow2dec/index.js")).default,
  retry: async () => (await import("./retry/index.js")).default,
  shared: async () => (await import("./shared/index.js")).default,
  tar: async () => (await import("./tar/index.js")).default,
  xz: async () => (await import("./xz/index.js")).default,
  zstd: async () => (await import("./zstd/index.js")).default,
});
