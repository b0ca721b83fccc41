import { describe, it, expect } from "vitest";
import createExportname from "../../src/filters/exportname/index.js";
import { runDescScript } from "../../src/filters/exportname/script.js";
import createMemory from "../../src/plugins/memory/index.js";
import { NbdError } from "../../src/backend/types.js";
import type { Plugin } from "../../src/backend/types.js";
import { NBD_EINVAL, NBD_EPERM } from "../../src/protocol/constants.js";
import { configureFilter, openFilter, lowerOf, LIST } from "./helpers.js";

/** A plugin with exports "a" (default) and "b", both described. */
function multi(defaultName: string | null = "a"): Plugin<{ name: string }> {
  const mem: Plugin = createMemory();
  return {
    ...mem,
    name: "multi",
    listExports: () => [
      { name: "a", description: "disk A" },
      { name: "b", description: "disk B" },
    ],
    defaultExport: () => defaultName,
    open: (_ro: boolean, name: string) => ({ name }),
    exportDescription: (h: { name: string }) => `plugin says ${h.name}`,
  };
}

async function setup(params: [string, string][], plugin: Plugin = multi()) {
  const f = createExportname();
  await configureFilter(f, plugin, [["size", "1M"], ...params]);
  return { f, p: plugin, lower: lowerOf(plugin) };
}

async function errOf(p: Promise<unknown>): Promise<NbdError> {
  const e = await p.then(() => null, (x) => x);
  expect(e).toBeInstanceOf(NbdError);
  return e as NbdError;
}

describe("exportname filter: configuration", () => {
  it("passes keys it does not own to the plugin", async () => {
    const { p, lower } = await setup([]);
    const ctx = await lower.open({ exportName: "a" });
    expect(await ctx.getSize()).toBe(1 << 20);
    void p;
  });
  it("rejects unknown modes and bad booleans with clear messages", () => {
    const f = createExportname();
    const next = async () => {};
    expect(() => f.config!(next, "exportname-list", "some")).toThrow("exportname: unrecognized exportname-list mode: some");
    expect(() => f.config!(next, "exportdesc", "weird")).toThrow("exportname: unrecognized exportdesc mode: weird");
    expect(() => f.config!(next, "exportname-strict", "perhaps")).toThrow(/^exportname: exportname-strict: /);
  });
  it("accepts nbdkit's underscore spellings and default-only", async () => {
    const { f, lower } = await setup([["exportname_list", "default-only"], ["default_export", "b"]]);
    expect(await f.listExports!(lower, LIST)).toEqual([{ name: "b" }]);
  });
});

describe("exportname filter: exportname-list", () => {
  it("keep (default) advertises the plugin's list with its descriptions", async () => {
    const { f, lower } = await setup([]);
    expect(await f.listExports!(lower, LIST)).toEqual([
      { name: "a", description: "disk A" },
      { name: "b", description: "disk B" },
    ]);
  });
  it("error refuses to list", async () => {
    const { f, lower } = await setup([["exportname-list", "error"]]);
    const e = await errOf(Promise.resolve().then(() => f.listExports!(lower, LIST)));
    expect(e.errno).toBe(NBD_EPERM);
    expect(e.message).toMatch(/restricted by policy/);
  });
  it("empty advertises nothing", async () => {
    const { f, lower } = await setup([["exportname-list", "empty"]]);
    expect(await f.listExports!(lower, LIST)).toEqual([]);
  });
  it("defaultonly advertises only the canonical default name (the plugin's)", async () => {
    const { f, lower } = await setup([["exportname-list", "defaultonly"]]);
    expect(await f.listExports!(lower, LIST)).toEqual([{ name: "a" }]);
  });
  it("defaultonly advertises default-export when given", async () => {
    const { f, lower } = await setup([["exportname-list", "defaultonly"], ["default-export", "b"]]);
    expect(await f.listExports!(lower, LIST)).toEqual([{ name: "b" }]);
  });
  it("defaultonly lists nothing when there is no default export (as nbdkit)", async () => {
    const { f, lower } = await setup([["exportname-list", "defaultonly"]], multi(null));
    expect(await f.listExports!(lower, LIST)).toEqual([]);
  });
  it("defaultonly lists nothing under strict without exportname=\"\"", async () => {
    const { f, lower } = await setup([["exportname-list", "defaultonly"], ["exportname-strict", "true"], ["exportname", "a"]]);
    expect(await f.listExports!(lower, LIST)).toEqual([]);
  });
  it("defaultonly lists the default name without a description, even with exportdesc=fixed", async () => {
    const { f, lower } = await setup([["exportname-list", "defaultonly"], ["exportdesc", "fixed:X"]]);
    expect(await f.listExports!(lower, LIST)).toEqual([{ name: "a" }]);
  });
  it("explicit advertises only exportname= names, in order", async () => {
    const { f, lower } = await setup([
      ["exportname-list", "explicit"], ["exportname", "z"], ["exportname", "b"],
    ]);
    expect(await f.listExports!(lower, LIST)).toEqual([{ name: "z" }, { name: "b" }]);
  });
});

describe("exportname filter: default export and strictness", () => {
  it("without options the default is the plugin's and \"\" opens it", async () => {
    const { f, p, lower } = await setup([]);
    expect(await f.defaultExport!(lower, LIST)).toBe("a");
    const { h, next } = await openFilter(f, p, false, "", lower);
    expect(h).toEqual({ name: "a" });
    expect(next.exportName).toBe("a");
  });
  it("default-export=NAME makes \"\" open NAME below", async () => {
    const { f, p, lower } = await setup([["default-export", "b"]]);
    expect(await f.defaultExport!(lower, LIST)).toBe("b");
    await openFilter(f, p, false, "", lower);
    expect(lower.opened).toEqual(["b"]);
  });
  it("default-export= (empty) is the same as omitting it", async () => {
    const { f, lower } = await setup([["default-export", ""]]);
    expect(await f.defaultExport!(lower, LIST)).toBe("a");
  });
  it("\"\" is refused when there is no default anywhere", async () => {
    const { f, p, lower } = await setup([], multi(null));
    const e = await errOf(openFilter(f, p, false, "", lower));
    expect(e.message).toMatch(/default export \(""\) not permitted/);
  });
  it("non-strict: any name may be opened, listed or not", async () => {
    const { f, p, lower } = await setup([["exportname-list", "explicit"], ["exportname", "a"]]);
    await openFilter(f, p, false, "unlisted", lower);
    expect(lower.opened).toEqual(["unlisted"]);
  });
  it("strict: names not given by exportname= are refused before opening below", async () => {
    const { f, p, lower } = await setup([["exportname-strict", "true"], ["exportname", "a"]]);
    const e = await errOf(openFilter(f, p, false, "b", lower));
    expect(e.errno).toBe(NBD_EINVAL);
    expect(e.message).toMatch(/export 'b' not found/);
    expect(lower.opened).toEqual([]);
    await openFilter(f, p, false, "a", lower);
    expect(lower.opened).toEqual(["a"]);
  });
  it("strict: \"\" has no default unless \"\" was listed", async () => {
    const { f, p, lower } = await setup([["exportname-strict", "1"], ["exportname", "a"]]);
    expect(await f.defaultExport!(lower, LIST)).toBeNull();
    await errOf(openFilter(f, p, false, "", lower));
  });
  it("strict: a listed \"\" opens default-export, which must itself be listed", async () => {
    const s1 = await setup([
      ["exportname-strict", "on"], ["exportname", ""], ["exportname", "b"], ["default-export", "b"],
    ]);
    expect(await s1.f.defaultExport!(s1.lower, LIST)).toBe("b");
    await openFilter(s1.f, s1.p, false, "", s1.lower);
    expect(s1.lower.opened).toEqual(["b"]);
    const s2 = await setup([["exportname-strict", "yes"], ["exportname", ""], ["default-export", "b"]]);
    await errOf(openFilter(s2.f, s2.p, false, "", s2.lower));
  });
  it("strict: a listed \"\" with no default-export opens \"\" below", async () => {
    const { f, p, lower } = await setup([["exportname-strict", "true"], ["exportname", ""]]);
    expect(await f.defaultExport!(lower, LIST)).toBe("");
    await openFilter(f, p, false, "", lower);
    expect(lower.opened).toEqual([""]);
  });
});

describe("exportname filter: exportdesc", () => {
  it("keep passes descriptions through, in lists and for an open export", async () => {
    const { f, p, lower } = await setup([["exportdesc", "keep"]]);
    const { h, next } = await openFilter(f, p, false, "b", lower);
    expect(await f.exportDescription!(next, h)).toBe("plugin says b");
  });
  it("none drops every description", async () => {
    const { f, p, lower } = await setup([["exportdesc", "none"]]);
    expect(await f.listExports!(lower, LIST)).toEqual([{ name: "a" }, { name: "b" }]);
    const { h, next } = await openFilter(f, p, false, "a", lower);
    expect(await f.exportDescription!(next, h)).toBeNull();
  });
  it("fixed:STRING gives every export the same description", async () => {
    const { f, p, lower } = await setup([["exportdesc", "fixed:the same: for all"]]);
    expect(await f.listExports!(lower, LIST)).toEqual([
      { name: "a", description: "the same: for all" },
      { name: "b", description: "the same: for all" },
    ]);
    const { h, next } = await openFilter(f, p, false, "b", lower);
    expect(await f.exportDescription!(next, h)).toBe("the same: for all");
  });
  it("fixed: also describes explicit lists", async () => {
    const { f, lower } = await setup([
      ["exportname-list", "explicit"], ["exportname", "x"], ["exportdesc", "fixed:X"],
    ]);
    expect(await f.listExports!(lower, LIST)).toEqual([{ name: "x", description: "X" }]);
  });
  it("script: runs sh -c with $name set (and exported), dropping one trailing newline", async () => {
    const { f, p, lower } = await setup([["exportdesc", 'script:echo "desc of $name"; sh -c \'echo "child sees $name"\'']]);
    expect(await f.listExports!(lower, LIST)).toEqual([
      { name: "a", description: "desc of a\nchild sees a" },
      { name: "b", description: "desc of b\nchild sees b" },
    ]);
    const { h, next } = await openFilter(f, p, false, "b", lower);
    expect(await f.exportDescription!(next, h)).toBe("desc of b\nchild sees b");
  });
  it("script: export names are never interpreted by the shell", async () => {
    const out = await runDescScript('printf %s "$name"', "$(echo pwned); `id` 'x\"");
    expect(out).toBe("$(echo pwned); `id` 'x\"");
  });
  it("script: output is truncated to 4096 bytes, and a huge output does not hang", async () => {
    const out = await runDescScript("head -c 1000000 /dev/zero | tr '\\0' x", "n");
    expect(out).toBe("x".repeat(4096));
  });
  it("script: the exit status is ignored", async () => {
    expect(await runDescScript("echo partial; exit 3", "n")).toBe("partial");
  });
  it("script: a script that runs too long is killed and gives no description", async () => {
    const t0 = Date.now();
    expect(await runDescScript("sleep 30; echo late", "n", 200)).toBeNull();
    expect(Date.now() - t0).toBeLessThan(5000);
  });
  it("script: empty output means no description", async () => {
    const { f, lower } = await setup([["exportdesc", "script:true"]]);
    expect(await f.listExports!(lower, LIST)).toEqual([{ name: "a" }, { name: "b" }]);
  });
});
