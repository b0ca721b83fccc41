// Built-in filters by name. Each entry loads its module on demand and
// returns the module's factory (call it for a fresh Filter object).

import type { Filter } from "../backend/types.js";

// A null-prototype object, so names like "constructor" are not found.
export const builtinFilters: Record<string, () => Promise<() => Filter>> = Object.assign(Object.create(null), {
  cache: async () => (await import("./cache/index.js")).default,
  cacheextents: async () => (await import("./cacheextents/index.js")).default,
  checkwrite: async () => (await import("./checkwrite/index.js")).default,
  cow: async () => (await import("./cow/index.js")).default,
  ddrescue: async () => (await import("./ddrescue/index.js")).default,
  exportname: async () => (await import("./exportname/index.js")).default,
  ext2: async () => (await import("./ext2/index.js")).default,
  extentlist: async () => (await import("./extentlist/index.js")).default,
  ip: async () => (await import("./ip/index.js")).default,
  limit: async () => (await import("./limit/index.js")).default,
  offset: async () => (await import("./offset/index.js")).default,
  openonce: async () => (await import("./openonce/index.js")).default,
  partition: async () => (await import("./partition/index.js")).default,
  readahead: async () => (await import("./readahead/index.js")).default,
  retry: async () => (await import("./retry/index.js")).default,
  scan: async () => (await import("./scan/index.js")).default,
  shared: async () => (await import("./shared/index.js")).default,
  swab: async () => (await import("./swab/index.js")).default,
  tar: async () => (await import("./tar/index.js")).default,
});
