// Built-in plugins by name. Each entry loads its module on demand and
// returns the module's factory (call it for a fresh Plugin object).

import type { Plugin } from "../backend/types.js";

// A null-prototype object, so names like "constructor" are not found.
export const builtinPlugins: Record<string, () => Promise<() => Plugin>> = Object.assign(Object.create(null), {
  S3: async () => (await import("./S3/index.js")).default,
  curl: async () => (await import("./curl/index.js")).default,
  file: async () => (await import("./file/index.js")).default,
  memory: async () => (await import("./memory/index.js")).default,
  nbd: async () => (await import("./nbd/index.js")).default,
  null: async () => (await import("./null/index.js")).default,
  pattern: async () => (await import("./pattern/index.js")).default,
  ssh: async () => (await import("./ssh/index.js")).default,
});
