// `nbdstate --check ./my-plugin.ts [--filter=./my-filter.ts]`: type-check
// the plugin and filter files given by path against the package's types
// (the CLI loads .ts through tsx, which strips types without checking
// them), then load each to check its shape (default export, name, the
// callbacks a plugin must have). Nothing is served.
//
// TypeScript is found next to the file first (the user's project), then
// next to nbdstate; "nbdstate" and @types/node likewise, falling back to
// the running package's own types, so a lone file can be checked too.

import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { CliError, errorMessage } from "./errors.js";
import { isPathSpec, loadFilter, loadPlugin } from "./load.js";

type Ts = typeof import("typescript");

const PACKAGE_ROOT = fileURLToPath(new URL("../../", import.meta.url));
/** dist/index.d.ts when running from dist, src/index.ts when running from source (tests). */
const OWN_TYPES = fileURLToPath(new URL(import.meta.url.endsWith(".ts") ? "../index.ts" : "../index.d.ts", import.meta.url));

async function findTypescript(file: string): Promise<Ts> {
  for (const from of [file, fileURLToPath(import.meta.url)]) {
    try {
      const path = createRequire(from).resolve("typescript");
      const mod = (await import(pathToFileURL(path).href)) as Ts & { default?: Ts };
      return mod.default ?? mod;
    } catch {
      /* next */
    }
  }
  throw new CliError("--check needs TypeScript: npm install --save-dev typescript @types/node");
}

export interface CheckResult {
  ok: boolean;
  /** Diagnostics and verdicts, as printed. */
  text: string;
}

/** Type-check one file; diagnostics formatted as tsc prints them. */
export async function typeCheck(file: string): Promise<CheckResult> {
  const ts = await findTypescript(file);
  const js = /\.(m?js|cjs)$/i.test(file);
  const options: import("typescript").CompilerOptions = {
    noEmit: true,
    strict: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    lib: ["lib.es2022.d.ts"],
    skipLibCheck: true,
    allowJs: js,
    checkJs: js,
    // A .ts plugin imports "./x.js" for ./x.ts, as NodeNext wants; tsx runs either.
    allowImportingTsExtensions: true,
    types: ["node"],
  };
  const host = ts.createCompilerHost(options);
  if (!ts.resolveModuleName("nbdstate", file, options, host).resolvedModule) {
    options.paths = { nbdstate: [OWN_TYPES] };
  }
  if (!ts.resolveTypeReferenceDirective("node", file, options, host).resolvedTypeReferenceDirective) {
    const own = resolve(PACKAGE_ROOT, "node_modules", "@types");
    if (existsSync(resolve(own, "node"))) options.typeRoots = [own];
    else options.types = [];
  }
  const program = ts.createProgram({ rootNames: [file], options, host });
  const diags = ts.getPreEmitDiagnostics(program);
  const fmt: import("typescript").FormatDiagnosticsHost = {
    getCanonicalFileName: (f) => f,
    getCurrentDirectory: () => process.cwd(),
    getNewLine: () => "\n",
  };
  let text = diags.length > 0 ? ts.formatDiagnostics(diags, fmt) : "";
  if (options.types?.length === 0 && diags.length > 0) text += "(no @types/node found: npm install --save-dev @types/node)\n";
  return { ok: !diags.some((d) => d.category === ts.DiagnosticCategory.Error), text };
}

/** --check: the status (0 when every file checks and loads). */
export async function runCheck(plugin: string, filters: readonly string[], write: (s: string) => void): Promise<number> {
  const items = [...filters.map((spec) => ({ kind: "filter" as const, spec })), { kind: "plugin" as const, spec: plugin }];
  let ok = true;
  for (const { kind, spec } of items) {
    if (!isPathSpec(spec)) continue; // built-in: nothing of the user's to check
    const file = resolve(spec);
    if (!existsSync(file)) throw new CliError(`--check: ${spec}: No such file or directory`);
    const r = await typeCheck(file);
    if (r.text) write(r.text);
    let loaded = "";
    try {
      const l = kind === "plugin" ? await loadPlugin(spec) : await loadFilter(spec);
      loaded = `, loads as ${kind} '${l.layer.name}'`;
    } catch (e) {
      write(`${spec}: ${errorMessage(e)}\n`);
      ok = false;
      continue;
    }
    if (!r.ok) ok = false;
    write(`${spec}: ${r.ok ? "no type errors" : "type errors"}${loaded}\n`);
  }
  return ok ? 0 : 1;
}
