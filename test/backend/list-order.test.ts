// listExports and defaultExport through the whole stack (src/backend/stack.ts
// and layer.ts): a logging plugin under three logging filters. Pins the call
// order (outer to inner: each filter's callback runs before the layer
// below's), that results flow back inner to outer, that a filter without
// the callback passes the call through, nbdkit's defaults for a plugin
// without the callbacks, and the checks a listing passes on its way up.
import { afterEach, describe, expect, it } from "vitest";
import { MAX_EXPORTS } from "../../src/backend/layer.js";
import { Stack } from "../../src/backend/stack.js";
import type { ExportEntry, Filter, ListParams, Plugin } from "../../src/backend/types.js";
import { runningStack } from "../helpers/stack.js";

const P: ListParams = { readonly: false, tls: false };

type Log = string[];

interface PluginOpts {
  list?: () => ExportEntry[];
  def?: () => string | null;
  /** Leave listExports / defaultExport out (nbdkit's defaults apply). */
  noList?: boolean;
  noDefault?: boolean;
}

function loggingPlugin(log: Log, o: PluginOpts = {}): Plugin {
  const p: Plugin = {
    name: "logplugin",
    load: () => void log.push("plugin:load"),
    config: (k, v) => void log.push(`plugin:config ${k}=${v}`),
    configComplete: () => void log.push("plugin:configComplete"),
    getReady: () => void log.push("plugin:getReady"),
    afterFork: () => void log.push("plugin:afterFork"),
    open: () => ({}),
    getSize: () => 512,
    pread: (_h, buf) => void buf.fill(0),
  };
  if (!o.noList) {
    p.listExports = (lp) => {
      log.push(`plugin:listExports ro=${lp.readonly} tls=${lp.tls}`);
      return o.list ? o.list() : [{ name: "disk", description: "plugin" }];
    };
  }
  if (!o.noDefault) {
    p.defaultExport = (lp) => {
      log.push(`plugin:defaultExport ro=${lp.readonly} tls=${lp.tls}`);
      return o.def ? o.def() : "disk";
    };
  }
  return p;
}

/**
 * A filter that logs each callback, then asks the layer below and marks
 * the answer with its name, so the result shows the order it came back in.
 * `passThrough` leaves listExports/defaultExport out entirely.
 */
function loggingFilter(name: string, log: Log, passThrough = false): Filter {
  const f: Filter = {
    name,
    load: () => void log.push(`${name}:load`),
    config: (next, k, v) => {
      log.push(`${name}:config ${k}=${v}`);
      return next(k, v);
    },
    configComplete: (next) => {
      log.push(`${name}:configComplete`);
      return next();
    },
    getReady: () => void log.push(`${name}:getReady`),
    afterFork: () => void log.push(`${name}:afterFork`),
  };
  if (!passThrough) {
    f.listExports = async (lower, lp) => {
      log.push(`${name}:listExports`);
      const below = await lower.listExports(lp);
      log.push(`${name}:listExports returned`);
      return below.map((e) => ({ name: `${e.name}+${name}`, description: `${e.description ?? ""}<${name}` }));
    };
    f.defaultExport = async (lower, lp) => {
      log.push(`${name}:defaultExport`);
      const d = await lower.defaultExport(lp);
      log.push(`${name}:defaultExport returned`);
      return d === null ? null : `${d}+${name}`;
    };
  }
  return f;
}

const stacks: Stack[] = [];
afterEach(async () => {
  for (const s of stacks.splice(0)) await s.unload();
});

/** Build `new Stack(plugin, filters)` and run the global lifecycle up to afterFork. */
async function ready(plugin: Plugin, filters: Filter[]): Promise<Stack> {
  const stack = await runningStack(plugin, filters, [["k", "v"]]);
  stacks.push(stack);
  return stack;
}

describe("listExports/defaultExport call order through three filters", () => {
  it("global callbacks run in nbdkit's order before any listing (load/getReady/afterFork inner->outer, config outer->inner)", async () => {
    const log: Log = [];
    await ready(loggingPlugin(log), ["f1", "f2", "f3"].map((n) => loggingFilter(n, log)));
    expect(log).toEqual([
      "plugin:load", "f3:load", "f2:load", "f1:load",
      "f1:config k=v", "f2:config k=v", "f3:config k=v", "plugin:config k=v",
      "f1:configComplete", "f2:configComplete", "f3:configComplete", "plugin:configComplete",
      "plugin:getReady", "f3:getReady", "f2:getReady", "f1:getReady",
      "plugin:afterFork", "f3:afterFork", "f2:afterFork", "f1:afterFork",
    ]);
  });

  it("listExports runs outer to inner (each filter before the layer below) and the list comes back inner to outer", async () => {
    const log: Log = [];
    const stack = await ready(loggingPlugin(log), ["f1", "f2", "f3"].map((n) => loggingFilter(n, log)));
    log.length = 0;
    const list = await stack.listExports(P);
    expect(log).toEqual([
      "f1:listExports", "f2:listExports", "f3:listExports",
      "plugin:listExports ro=false tls=false",
      "f3:listExports returned", "f2:listExports returned", "f1:listExports returned",
    ]);
    // f3 saw the plugin's list first, f1 last.
    expect(list).toEqual([{ name: "disk+f3+f2+f1", description: "plugin<f3<f2<f1" }]);
  });

  it("defaultExport runs outer to inner and the name comes back inner to outer", async () => {
    const log: Log = [];
    const stack = await ready(loggingPlugin(log), ["f1", "f2", "f3"].map((n) => loggingFilter(n, log)));
    log.length = 0;
    expect(await stack.defaultExport({ readonly: true, tls: false })).toBe("disk+f3+f2+f1");
    expect(log).toEqual([
      "f1:defaultExport", "f2:defaultExport", "f3:defaultExport",
      "plugin:defaultExport ro=true tls=false",
      "f3:defaultExport returned", "f2:defaultExport returned", "f1:defaultExport returned",
    ]);
  });

  it("a filter without listExports/defaultExport passes both calls straight to the layer below", async () => {
    const log: Log = [];
    const stack = await ready(loggingPlugin(log), [
      loggingFilter("f1", log), loggingFilter("f2", log, true), loggingFilter("f3", log),
    ]);
    log.length = 0;
    expect(await stack.listExports(P)).toEqual([{ name: "disk+f3+f1", description: "plugin<f3<f1" }]);
    expect(await stack.defaultExport(P)).toBe("disk+f3+f1");
    expect(log).toEqual([
      "f1:listExports", "f3:listExports", "plugin:listExports ro=false tls=false",
      "f3:listExports returned", "f1:listExports returned",
      "f1:defaultExport", "f3:defaultExport", "plugin:defaultExport ro=false tls=false",
      "f3:defaultExport returned", "f1:defaultExport returned",
    ]);
  });

  it("with no filter taking part, the top of the stack answers with the plugin's own list and default", async () => {
    const log: Log = [];
    const stack = await ready(loggingPlugin(log), ["f1", "f2", "f3"].map((n) => loggingFilter(n, log, true)));
    log.length = 0;
    expect(await stack.listExports(P)).toEqual([{ name: "disk", description: "plugin" }]);
    expect(await stack.defaultExport(P)).toBe("disk");
    expect(log).toEqual(["plugin:listExports ro=false tls=false", "plugin:defaultExport ro=false tls=false"]);
  });

  it("listing params (readonly, tls) reach the plugin unchanged through the filters", async () => {
    const log: Log = [];
    const stack = await ready(loggingPlugin(log), ["f1", "f2", "f3"].map((n) => loggingFilter(n, log)));
    log.length = 0;
    await stack.listExports({ readonly: true, tls: true });
    expect(log).toContain("plugin:listExports ro=true tls=true");
  });

  it("a failing listExports below propagates up through every filter (no filter swallows it)", async () => {
    const log: Log = [];
    const plugin = loggingPlugin(log, { list: () => { throw new Error("plugin cannot list"); } });
    const stack = await ready(plugin, ["f1", "f2", "f3"].map((n) => loggingFilter(n, log)));
    log.length = 0;
    await expect(stack.listExports(P)).rejects.toThrow("plugin cannot list");
    expect(log).toEqual(["f1:listExports", "f2:listExports", "f3:listExports", "plugin:listExports ro=false tls=false"]);
  });
});

describe("nbdkit's defaults for a plugin without listing callbacks", () => {
  it("a plugin without defaultExport has the default export \"\"", async () => {
    const log: Log = [];
    const stack = await ready(loggingPlugin(log, { noDefault: true }), [loggingFilter("f1", log, true)]);
    expect(await stack.defaultExport(P)).toBe("");
  });

  it("a plugin without listExports lists its default export (found through its defaultExport)", async () => {
    const log: Log = [];
    const stack = await ready(loggingPlugin(log, { noList: true, def: () => "only" }), [loggingFilter("f1", log)]);
    log.length = 0;
    expect(await stack.listExports(P)).toEqual([{ name: "only+f1", description: "<f1" }]);
    expect(log).toEqual(["f1:listExports", "plugin:defaultExport ro=false tls=false", "f1:listExports returned"]);
  });

  it("a plugin without listExports and with no default export (null) lists nothing", async () => {
    const log: Log = [];
    const stack = await ready(loggingPlugin(log, { noList: true, def: () => null }), []);
    expect(await stack.listExports(P)).toEqual([]);
  });

  it("a plugin with neither callback lists the single export \"\"", async () => {
    const log: Log = [];
    const stack = await ready(loggingPlugin(log, { noList: true, noDefault: true }), []);
    expect(await stack.listExports(P)).toEqual([{ name: "" }]);
  });
});

describe("checks on a listing and a default name (src/backend/layer.ts)", () => {
  const names = (n: number): ExportEntry[] => Array.from({ length: n }, (_, i) => ({ name: `e${i}` }));

  it(`a listing of exactly MAX_EXPORTS (${MAX_EXPORTS}) entries passes`, async () => {
    const stack = await ready(loggingPlugin([], { list: () => names(MAX_EXPORTS) }), [loggingFilter("f1", [], true)]);
    expect(await stack.listExports(P)).toHaveLength(MAX_EXPORTS);
  });

  it("a listing over MAX_EXPORTS entries is refused, at the plugin and at a filter that grows it", async () => {
    const s1 = await ready(loggingPlugin([], { list: () => names(MAX_EXPORTS + 1) }), []);
    await expect(s1.listExports(P)).rejects.toThrow(/more than 10000 exports/);
    const grow: Filter = { name: "grow", listExports: async (lower, lp) => [...(await lower.listExports(lp)), ...names(MAX_EXPORTS)] };
    const s2 = await ready(loggingPlugin([], { list: () => [{ name: "disk" }] }), [grow]);
    await expect(s2.listExports(P)).rejects.toThrow(/grow: listExports returned more than 10000 exports/);
  });

  it("a listing with a name over 4096 bytes, a NUL in a name, or a duplicate name is refused", async () => {
    for (const bad of [[{ name: "x".repeat(4097) }], [{ name: "a\0b" }], [{ name: "a" }, { name: "a" }], [{ name: "d", description: "y".repeat(4097) }]]) {
      const stack = await ready(loggingPlugin([], { list: () => bad }), []);
      await expect(stack.listExports(P)).rejects.toThrow(/logplugin: /);
    }
  });

  it("a default name that is not a valid NBD string (over 4096 bytes, or with NUL) means no default export", async () => {
    const s1 = await ready(loggingPlugin([], { def: () => "x".repeat(4097) }), []);
    expect(await s1.defaultExport(P)).toBeNull();
    const s2 = await ready(loggingPlugin([], { def: () => "a\0b" }), []);
    expect(await s2.defaultExport(P)).toBeNull();
    const s3 = await ready(loggingPlugin([], { def: () => "x".repeat(4096) }), []);
    expect(await s3.defaultExport(P)).toBe("x".repeat(4096));
  });
});
