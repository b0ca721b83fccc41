import { describe, it, expect } from "vitest";
import { readFileSync } from "node:fs";
import { OPTIONS } from "../../src/cli/args.js";
import { dumpPluginText, layerHelp, packageVersion, pluginHelpText, usageText, versionText } from "../../src/cli/help.js";
import type { Loaded } from "../../src/cli/load.js";
import type { Filter, Plugin } from "../../src/backend/types.js";

const plugin: Loaded<Plugin> = {
  kind: "plugin",
  spec: "demo",
  path: "/x/plugins/demo/index.js",
  builtin: true,
  layer: {
    name: "demo",
    version: "1.2.3",
    longname: "nbdstate demo plugin",
    description: "A demo.",
    magicConfigKey: "size",
    configHelp: "size=<SIZE>   (required) Size of the disk",
    config() {},
    open: () => ({}),
    getSize: () => 0,
    pread() {},
    canFua: () => "native" as const,
    dumpPlugin: () => "demo_feature=yes",
  },
};

const filter: Loaded<Filter> = {
  kind: "filter",
  spec: "./f.ts",
  path: "/tmp/f.ts",
  builtin: false,
  layer: { name: "f", configHelp: "f-opt=<N>   An option." },
};

describe("usageText", () => {
  const text = usageText();

  it("starts with an nbdkit-like synopsis", () => {
    expect(text.startsWith("nbdstate [-4|--ipv4-only] [-6|--ipv6-only]\n")).toBe(true);
    expect(text).toContain("PLUGIN [[KEY=]VALUE [KEY=VALUE [...]]]");
    expect(text).toContain("[--filter=FILTER ...]");
    expect(text).toContain("[-U|--unix SOCKET|-]");
    expect(text).toContain("nbdstate PLUGIN --dump-plugin");
    expect(text).toContain("nbdstate [-V|--version]");
  });

  it("mentions every visible option, short and long", () => {
    for (const o of OPTIONS.filter((x) => !x.hidden)) {
      for (const f of o.flags.split(/[ ,]+/).filter((s) => s.startsWith("-"))) {
        expect(text, `help mentions ${f}`).toContain(f);
      }
    }
  });

  it("lists built-in names when given", () => {
    const t = usageText({ plugins: ["memory", "null"], filters: ["offset"] });
    expect(t).toContain("Built-in plugins: memory null\n");
    expect(t).toContain("Built-in filters: offset\n");
  });
});

describe("plugin help", () => {
  it("prints name, longname, path, description and configHelp", () => {
    expect(layerHelp(plugin)).toBe(
      "plugin: demo (nbdstate demo plugin)\n(/x/plugins/demo/index.js)\nA demo.\nsize=<SIZE>   (required) Size of the disk\n",
    );
  });

  it("prints the usage, then each filter, then the plugin", () => {
    const t = pluginHelpText(plugin, [filter]);
    const u = t.indexOf("nbdstate [-4"), f = t.indexOf("filter: f\n"), p = t.indexOf("plugin: demo");
    expect(u).toBe(0);
    expect(f).toBeGreaterThan(u);
    expect(p).toBeGreaterThan(f);
    expect(t).toContain("f-opt=<N>   An option.");
  });
});

describe("--dump-plugin", () => {
  it("prints nbdkit's fields, has_* lines and dumpPlugin()", () => {
    expect(dumpPluginText(plugin).split("\n")).toEqual([
      "path=/x/plugins/demo/index.js",
      "name=demo",
      "version=1.2.3",
      "api_version=2",
      "max_thread_model=parallel",
      "thread_model=parallel",
      "magic_config_key=size",
      "has_longname=1",
      "has_description=1",
      "has_dump_plugin=1",
      "has_config=1",
      "has_config_help=1",
      "has_open=1",
      "has_get_size=1",
      "has_can_fua=1",
      "has_pread=1",
      "demo_feature=yes",
      "",
    ]);
  });
});

describe("--version", () => {
  it("prints the package version, then the layers'", () => {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string };
    expect(packageVersion()).toBe(pkg.version);
    expect(versionText()).toBe(`nbdstate ${pkg.version}\n`);
    expect(versionText([filter, plugin])).toBe(`nbdstate ${pkg.version}\ndemo 1.2.3\n`);
  });
});
