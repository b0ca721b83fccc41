// -D NAME.FLAG=N, with nbdkit's syntax and meaning where it carries over.
//
// Server flags (NAME "nbdstate", or "nbdkit" so nbdkit scripts run as they are):
//   nbdstate.backend=N             debug lines of the layer stack (config,
//   nbdstate.backend.controlpath=N   lifecycle, open/close, a plugin's debug())
//   nbdstate.backend.datapath=N    accepted: nbdstate prints no line per request
//   nbdstate.server=N              listener and per-connection lines (handshake,
//                                    options, disconnects)
//   nbdstate.environ=1             print the environment at startup
// An area prints with -v unless set to 0, and without -v when set to 1 or
// more (so -D nbdstate.server=1 shows connection lines and nothing else).
//
// NAME a plugin or filter: nbdkit sets the C global NAME_debug_FLAG; a
// nbdstate module sets the FLAG property of its exported `debugFlags`
// object (see README "Writing a plugin") before load() is called.

import { CliError } from "./errors.js";

export interface DebugFlag {
  name: string;
  flag: string;
  value: number;
}

export type DebugArea = "backend" | "server";

/** Parse "NAME.FLAG=N" as nbdkit's add_debug_flag (N an integer, any base prefix nbdkit_parse_int takes). */
export function parseDebugFlag(arg: string): DebugFlag {
  const m = /^([^.=]+)\.([^=]+)=(.+)$/.exec(arg);
  const bad = () => new CliError("-D (Debug Flag) must have the format NAME.FLAG=N");
  if (!m) throw bad();
  const value = parseInteger(m[3]!);
  if (value === undefined) throw bad();
  return { name: m[1]!, flag: m[2]!, value };
}

function parseInteger(s: string): number | undefined {
  const t = s.trim();
  const m = /^([+-]?)(0x[0-9a-f]+|0[0-7]*|[1-9][0-9]*)$/i.exec(t);
  if (!m) return undefined;
  const body = m[2]!;
  const n = /^0x/i.test(body) ? parseInt(body.slice(2), 16) : body.length > 1 && body.startsWith("0") ? parseInt(body, 8) : Number(body);
  const v = m[1] === "-" ? -n : n;
  return Number.isSafeInteger(v) && Math.abs(v) <= 0x7fffffff ? v : undefined;
}

const SERVER_NAMES = new Set(["nbdstate", "nbdkit"]);

const AREA_OF: Record<string, DebugArea | "datapath" | "environ"> = {
  backend: "backend",
  "backend.controlpath": "backend",
  "backend.datapath": "datapath",
  server: "server",
  environ: "environ",
};

export interface DebugSettings {
  /** Whether a debug line of this area is printed. */
  enabled(area: DebugArea): boolean;
  /** -D nbdstate.environ=1. */
  environ: boolean;
  /** Flags for plugins and filters, by layer name. */
  layerFlags: Map<string, DebugFlag[]>;
  /** Warnings about flags that mean nothing here (printed once at startup). */
  warnings: string[];
}

export function debugSettings(flags: readonly DebugFlag[], verbose: boolean): DebugSettings {
  const areas = new Map<DebugArea, number>();
  const layerFlags = new Map<string, DebugFlag[]>();
  const warnings: string[] = [];
  let environ = false;
  for (const f of flags) {
    if (!SERVER_NAMES.has(f.name)) {
      const list = layerFlags.get(f.name) ?? [];
      list.push(f);
      layerFlags.set(f.name, list);
      continue;
    }
    const area = AREA_OF[f.flag];
    if (area === undefined) {
      warnings.push(`-D ${f.name}.${f.flag}: no such server debug flag (known: ${Object.keys(AREA_OF).join(", ")})`);
    } else if (area === "environ") environ = f.value !== 0;
    else if (area !== "datapath") areas.set(area, f.value);
  }
  return {
    enabled: (area) => {
      const v = areas.get(area);
      return v === undefined ? verbose : v > 0;
    },
    environ,
    layerFlags,
    warnings,
  };
}

/**
 * Set a loaded layer's flags in its module's exported `debugFlags` object.
 * Returns warnings for flags it does not declare (nbdkit warns likewise).
 */
export function applyLayerFlags(name: string, debugFlags: Record<string, unknown> | undefined, flags: readonly DebugFlag[]): string[] {
  const out: string[] = [];
  for (const f of flags) {
    if (debugFlags && Object.prototype.hasOwnProperty.call(debugFlags, f.flag) && typeof debugFlags[f.flag] === "number") {
      debugFlags[f.flag] = f.value;
    } else {
      out.push(`-D ${name}.${f.flag}: ${name} has no debug flag called ${f.flag} (its module exports no debugFlags.${f.flag})`);
    }
  }
  return out;
}
