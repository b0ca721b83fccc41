import { describe, it, expect } from "vitest";
import { builtinPlugins } from "../../src/plugins/registry.js";
import { builtinFilters } from "../../src/filters/registry.js";

describe("built-in registries", () => {
  it("load every plugin by name as a factory of fresh, named plugin objects", async () => {
    // At least these (other modules are being added alongside).
    expect(Object.keys(builtinPlugins).sort()).toEqual(expect.arrayContaining(["file", "memory", "nbd", "null", "pattern"]));
    for (const [name, load] of Object.entries(builtinPlugins)) {
      const factory = await load();
      const a = factory();
      const b = factory();
      expect(a).not.toBe(b);
      expect(a.name).toBe(name);
      expect(a.version).toBeTruthy();
      expect(a.description).toBeTruthy();
      expect(a.configHelp).toBeTruthy();
      expect(typeof a.open).toBe("function");
    }
  });
  it("load every filter by name as a factory of fresh, named filter objects", async () => {
    expect(Object.keys(builtinFilters).sort()).toEqual(expect.arrayContaining(["exportname", "offset", "retry", "shared"]));
    for (const [name, load] of Object.entries(builtinFilters)) {
      const factory = await load();
      const a = factory();
      expect(a).not.toBe(factory());
      expect(a.name).toBe(name);
      expect(a.configHelp).toBeTruthy();
    }
  });
  it("do not find inherited Object properties as plugin names", () => {
    expect(builtinPlugins["constructor"]).toBeUndefined();
    expect(builtinFilters["toString"]).toBeUndefined();
    expect("hasOwnProperty" in builtinPlugins).toBe(false);
  });
});
