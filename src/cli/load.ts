// Loading the PLUGIN and the --filter layers: a built-in name, or a path to
// a .js/.mjs/.cjs/.ts/.mts file whose default export is a Plugin (Filter)
// object or a factory function returning one (maybe asynchronously).

import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { Filter, Plugin } from "../backend/types.js";
import { CliError, errorMessage } from "./errors.js";

export type LayerKind = "plugin" | "filter";

export interface Loaded<T> {
  kind: LayerKind;
  /** What the user wrote (name or path). */
  spec: string;
  /** Absolute path of the module (for --dump-plugin and --help). */
  path: string;
  builtin: boolean;
  layer: T;
  /** The module's exported `debugFlags` object (-D NAME.FLAG=N sets its properties). */
  debugFlags?: Record<string, unknown>;
}

/** A path (contains '/' or ends with a script extension), not a built-in name. */
export function isPathSpec(spec: string): boolean {
  return spec.includes("/") || /\.(m?js|cjs|m?ts|cts|tsx)$/i.test(spec);
}

const TS_FILE = /\.(m?ts|cts|tsx)$/i;

/** Where a built-in layer's module lives (dist/plugins/NAME/index.js or src/...). */
function builtinPath(kind: LayerKind, name: string): string {
  const ext = import.meta.url.endsWith(".ts") ? "ts" : "js";
  return fileURLToPath(new URL(`../${kind}s/${name}/index.${ext}`, import.meta.url));
}

async function builtinNames(kind: LayerKind): Promise<string[]> {
  const table = await registry(kind);
  return Object.keys(table).sort();
}

async function registry(kind: LayerKind): Promise<Record<string, () => Promise<() => unknown>>> {
  if (kind === "plugin") return (await import("../plugins/registry.js")).builtinPlugins;
  return (await import("../filters/registry.js")).builtinFilters;
}

/** Names of the built-in plugins and filters (for --help). */
export async function listBuiltins(): Promise<{ plugins: string[]; filters: string[] }> {
  return { plugins: await builtinNames("plugin"), filters: await builtinNames("filter") };
}

async function importFile(path: string): Promise<unknown> {
  const url = pathToFileURL(path).href;
  if (TS_FILE.test(path)) {
    const { tsImport } = await import("tsx/esm/api");
    return tsImport(url, import.meta.url);
  }
  return import(url);
}

/** The layer object out of a module: default export, object or factory. */
async function fromModule(kind: LayerKind, spec: string, mod: unknown): Promise<unknown> {
  let v: unknown = mod;
  if (v && typeof v === "object" && !("default" in v)) {
    // A named export only (export const plugin = ...): say so, not "must have a name".
    const names = Object.keys(v).filter((k) => k !== "debugFlags");
    const what = kind === "plugin" ? "a Plugin object" : "a Filter object";
    throw new CliError(
      `${spec} has no default export; export default ${what} or a factory function returning one` +
        (names.length > 0 ? ` (it exports only: ${names.slice(0, 8).join(", ")}${names.length > 8 ? ", ..." : ""})` : ""),
    );
  }
  if (v && typeof v === "object" && "default" in v) v = (v as { default: unknown }).default;
  // A CommonJS module imported as ESM may nest the default once more.
  if (v && typeof v === "object" && "default" in v && !("name" in v)) v = (v as { default: unknown }).default;
  if (typeof v === "function") {
    try {
      v = await (v as () => unknown)();
    } catch (e) {
      throw new CliError(`${kind} '${spec}': its factory function failed: ${errorMessage(e)}`);
    }
  }
  return v;
}

/** `export const debugFlags = { name: 0 }`: the object -D sets, if the module has one. */
function debugFlagsOf(mod: unknown): Record<string, unknown> | undefined {
  const d = mod && typeof mod === "object" ? (mod as { debugFlags?: unknown }).debugFlags : undefined;
  return d && typeof d === "object" ? (d as Record<string, unknown>) : undefined;
}

function validate(kind: LayerKind, spec: string, v: unknown): void {
  const what = `${kind} '${spec}'`;
  if (!v || typeof v !== "object") {
    const got = v === null ? "null" : typeof v;
    throw new CliError(`${what}: the module's default export must be a ${kind} object or a function returning one (it gave ${got})`);
  }
  const o = v as Record<string, unknown>;
  if (typeof o.name !== "string" || o.name === "") {
    throw new CliError(`${what}: the ${kind} object has no name: give it one (name: "my-${kind}")`);
  }
  if (kind === "plugin") {
    for (const cb of ["open", "getSize", "pread"]) {
      if (typeof o[cb] !== "function") {
        throw new CliError(`${what}: the plugin has no ${cb} callback (a plugin needs open, getSize and pread; a filter is given with --filter=)`);
      }
    }
  }
}

async function loadLayer(kind: LayerKind, spec: string): Promise<Loaded<unknown>> {
  if (isPathSpec(spec)) {
    const path = resolve(spec);
    if (!existsSync(path)) throw new CliError(`cannot open ${kind} '${spec}': ${path}: No such file or directory`);
    let mod: unknown;
    try {
      mod = await importFile(path);
    } catch (e) {
      throw new CliError(`cannot open ${kind} '${spec}': ${errorMessage(e)}`);
    }
    const layer = await fromModule(kind, spec, mod);
    validate(kind, spec, layer);
    const debugFlags = debugFlagsOf(mod);
    return debugFlags ? { kind, spec, path, builtin: false, layer, debugFlags } : { kind, spec, path, builtin: false, layer };
  }
  const table = await registry(kind);
  const factory = Object.prototype.hasOwnProperty.call(table, spec) ? table[spec] : undefined;
  if (!factory) {
    const names = Object.keys(table).sort().join(", ");
    throw new CliError(`cannot open ${kind} '${spec}': no built-in ${kind} of that name (built-in: ${names})`);
  }
  const make = await factory();
  const layer = await make();
  validate(kind, spec, layer);
  return { kind, spec, path: builtinPath(kind, spec), builtin: true, layer };
}

export async function loadPlugin(spec: string): Promise<Loaded<Plugin>> {
  return (await loadLayer("plugin", spec)) as Loaded<Plugin>;
}

export async function loadFilter(spec: string): Promise<Loaded<Filter>> {
  return (await loadLayer("filter", spec)) as Loaded<Filter>;
}
