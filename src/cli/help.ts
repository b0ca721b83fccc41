// --help, PLUGIN --help, --dump-plugin, --dump-config and --version texts,
// in nbdkit's formats.

import { readFileSync } from "node:fs";
import { arch, platform } from "node:os";
import { fileURLToPath } from "node:url";
import type { Filter, Plugin } from "../backend/types.js";
import { OPTIONS } from "./args.js";
import { PROGRAM } from "./errors.js";
import type { Loaded } from "./load.js";

let cachedVersion: string | undefined;

/** The package version, read from package.json (two levels above this file). */
export function packageVersion(): string {
  if (cachedVersion === undefined) {
    try {
      const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version?: string };
      cachedVersion = pkg.version ?? "0.0.0";
    } catch {
      cachedVersion = "0.0.0";
    }
  }
  return cachedVersion;
}

export function versionText(layers: Loaded<Plugin | Filter>[] = []): string {
  let s = `${PROGRAM} ${packageVersion()}\n`;
  for (const l of layers) if (l.layer.version) s += `${l.layer.name} ${l.layer.version}\n`;
  return s;
}

const SYNOPSIS = `${PROGRAM} [-4|--ipv4-only] [-6|--ipv6-only]
         [-D|--debug PLUGIN|FILTER|nbdstate.FLAG=N]
         [--exit-with-parent] [-e|--exportname EXPORTNAME]
         [--experimental-list-hier]
         [--filter=FILTER ...] [-f|--foreground]
         [-i|--ipaddr IPADDR] [--keepalive] [--log=stderr|syslog|null]
         [--inspect=stderr|ws://HOST:PORT] [--status-page=[HOST:]PORT]
         [--mask-handshake=MASK] [-n|--newstyle]
         [--no-mc|--no-meta-contexts] [--no-sr|--no-structured-replies]
         [-P|--pidfile PIDFILE] [-p|--port PORT]
         [-r|--readonly] [--run 'COMMAND ARGS ...'] [-s|--single]
         [-t|--threads THREADS] [--timeout=TIMEOUT] [--tls=off|on|require]
         [--tls-certificates=/path/to/certificates]
         [--tls-psk=/path/to/pskfile] [--tls-verify-peer]
         [-U|--unix SOCKET|-] [-v|--verbose] [--workers=N]
         PLUGIN [[KEY=]VALUE [KEY=VALUE [...]]]

${PROGRAM} --dump-config

${PROGRAM} PLUGIN --dump-plugin

${PROGRAM} --check ./my-plugin.ts [--filter=./my-filter.ts ...]

${PROGRAM} PLUGIN --help

${PROGRAM} ls URI   (one level of a server's export tree: NBD_OPT_LIST_HIER, else NBD_OPT_LIST)

${PROGRAM} --help

${PROGRAM} [-V|--version]
`;

/** The option list under the synopsis: every visible option, one a line. */
function optionList(): string {
  const visible = OPTIONS.filter((o) => !o.hidden);
  const width = Math.max(...visible.map((o) => o.flags.length)) + 2;
  return visible.map((o) => `  ${o.flags.padEnd(width)}${o.description}`).join("\n") + "\n";
}

/** `nbdstate --help`. Built-in names are listed when known. */
export function usageText(builtins?: { plugins: string[]; filters: string[] }): string {
  let s = SYNOPSIS + "\nOptions:\n" + optionList();
  s +=
    "\nPLUGIN is the name of a built-in plugin or the path of a .js, .mjs or .ts file\n" +
    "whose default export is a plugin (or a function returning one); the same for\n" +
    "--filter. A bare VALUE is given to the plugin's magic parameter (e.g. size).\n";
  if (builtins) {
    s += `\nBuilt-in plugins: ${builtins.plugins.join(" ")}\n`;
    s += `Built-in filters: ${builtins.filters.join(" ")}\n`;
  }
  s += `\nPlease read ${PROGRAM}'s README for full usage.\n`;
  return s;
}

/** The block printed for one layer by `nbdstate PLUGIN --help` (nbdkit's layout). */
export function layerHelp(l: Loaded<Plugin | Filter>): string {
  const { layer } = l;
  let s = `${l.kind}: ${layer.name}${layer.longname ? ` (${layer.longname})` : ""}\n`;
  s += `(${l.path})\n`;
  if (layer.description) s += layer.description.replace(/\n*$/, "\n");
  if (layer.configHelp) s += layer.configHelp.replace(/\n*$/, "\n");
  return s;
}

/** `nbdstate [--filter=F ...] PLUGIN --help`: usage, then each filter, then the plugin. */
export function pluginHelpText(plugin: Loaded<Plugin>, filters: Loaded<Filter>[], builtins?: { plugins: string[]; filters: string[] }): string {
  return [usageText(builtins), ...filters.map(layerHelp), layerHelp(plugin)].join("\n");
}

/** Callbacks in nbdkit's --dump-plugin order, as has_<snake_case>=1 lines. */
const CALLBACKS = [
  "longname", "description", "load", "unload", "dumpPlugin", "config", "configComplete", "configHelp",
  "getReady", "afterFork", "cleanup", "preconnect", "listExports", "defaultExport", "open", "prepare",
  "finalize", "close", "exportDescription", "getSize", "blockSize", "canWrite", "canFlush", "isRotational",
  "canTrim", "canZero", "canFastZero", "canExtents", "canFua", "canMultiConn", "canCache", "pread",
  "pwrite", "flush", "trim", "zero", "extents", "cache",
] as const;

const snake = (s: string) => s.replace(/[A-Z]/g, (c) => "_" + c.toLowerCase());

/** `nbdstate PLUGIN --dump-plugin`. */
export function dumpPluginText(l: Loaded<Plugin>): string {
  const p = l.layer as unknown as Record<string, unknown> & Plugin;
  const lines = [
    `path=${l.path}`,
    `name=${p.name}`,
    `version=${p.version ?? packageVersion()}`,
    "api_version=2",
    "max_thread_model=parallel",
    "thread_model=parallel",
  ];
  if (p.magicConfigKey) lines.push(`magic_config_key=${p.magicConfigKey}`);
  for (const cb of CALLBACKS) if (p[cb] !== undefined && p[cb] !== null) lines.push(`has_${snake(cb)}=1`);
  let s = lines.join("\n") + "\n";
  if (typeof p.dumpPlugin === "function") {
    const extra = p.dumpPlugin();
    if (extra) s += extra.replace(/\n*$/, "\n");
  }
  return s;
}

/** `nbdstate --dump-config`. */
export function dumpConfigText(): string {
  const here = (rel: string) => fileURLToPath(new URL(rel, import.meta.url));
  const cpu: Record<string, string> = { x64: "x86_64", arm64: "aarch64", ia32: "i686" };
  const [major = "0", minor = "0"] = packageVersion().split(".");
  return [
    `binary=${here("../../bin/nbdstate.js")}`,
    "exit_with_parent=yes",
    `filterdir=${here("../filters")}`,
    `host_cpu=${cpu[arch()] ?? arch()}`,
    `host_os=${platform()}`,
    `name=${PROGRAM}`,
    `plugindir=${here("../plugins")}`,
    "tls=yes",
    `version=${packageVersion()}`,
    `version_major=${major}`,
    `version_minor=${minor}`,
  ].join("\n") + "\n";
}

/** `--short-options` / `--long-options`: one option a line, as nbdkit (for bash completion). */
export function optionNamesText(which: "short" | "long"): string {
  const names: string[] = [];
  for (const o of OPTIONS) {
    if (o.refused) continue;
    for (const part of o.flags.split(/[ ,]+/)) {
      const isLong = part.startsWith("--");
      if (!isLong && !/^-[^-]$/.test(part)) continue;
      if (isLong !== (which === "long") || names.includes(part)) continue;
      if (part === "--short-options" || part === "--long-options") continue;
      names.push(part);
    }
  }
  return names.join("\n") + "\n";
}
