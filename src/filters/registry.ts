// Built-in filters by name. Each entry loads its module on demand and
// returns the module's factory (call it for a fresh Filter object).

import type { Filter } from "../backend/types.js";

// A null-prototype object, so names like "constructor" are not found.
export const builtinFilters: Record<string, () => Promise<() => Filter>> = Object.assign(Object.create(null), {
  "blocksize-policy": async () => (await import("./blocksize-policy/index.js")).default,
  blocksize: async () => (await import("./blocksize/index.js")).default,
  delay: async () => (await import("./delay/index.js")).default,
  error: async () => (await import("./error/index.js")).default,
  evil: async () => (await import("./evil/index.js")).default,
  exitlast: async () => (await import("./exitlast/index.js")).default,
  exitwhen: async () => (await import("./exitwhen/index.js")).default,
  exportname: async () => (await import("./exportname/index.js")).default,
  ext2: async () => (await import("./ext2/index.js")).default,
  fua: async () => (await import("./fua/index.js")).default,
  ip: async () => (await import("./ip/index.js")).default,
  limit: async () => (await import("./limit/index.js")).default,
  log: async () => (await import("./log/index.js")).default,
  "multi-conn": async () => (await import("./multi-conn/index.js")).default,
  nocache: async () => (await import("./nocache/index.js")).default,
  noextents: async () => (await import("./noextents/index.js")).default,
  nofilter: async () => (await import("./nofilter/index.js")).default,
  noparallel: async () => (await import("./noparallel/index.js")).default,
  nozero: async () => (await import("./nozero/index.js")).default,
  offset: async () => (await import("./offset/index.js")).default,
  partition: async () => (await import("./partition/index.js")).default,
  pause: async () => (await import("./pause/index.js")).default,
  protect: async () => (await import("./protect/index.js")).default,
  rate: async () => (await import("./rate/index.js")).default,
  readonly: async () => (await import("./readonly/index.js")).default,
  "retry-request": async () => (await import("./retry-request/index.js")).default,
  retry: async () => (await import("./retry/index.js")).default,
  rotational: async () => (await import("./rotational/index.js")).default,
  shared: async () => (await import("./shared/index.js")).default,
  stats: async () => (await import("./stats/index.js")).default,
  tar: async () => (await import("./tar/index.js")).default,
  "time-limit": async () => (await import("./time-limit/index.js")).default,
  "tls-fallback": async () => (await import("./tls-fallback/index.js")).default,
  truncate: async () => (await import("./truncate/index.js")).default,
});
