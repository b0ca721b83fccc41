// exportname filter: adjust the export list, the default export, which
// names may be opened, and export descriptions.

import { NbdError } from "../../backend/types.js";
import type { Filter, ExportEntry, LowerBackend, ListParams } from "../../backend/types.js";
import { NBD_EINVAL, NBD_EPERM } from "../../protocol/constants.js";
import { parseBool } from "../../backend/size.js";
import { runDescScript } from "./script.js";

type ListMode = "keep" | "error" | "empty" | "defaultonly" | "explicit";
type DescMode = "keep" | "none" | "fixed" | "script";

interface ExportnameHandle {
  /** The canonical export name this connection opened. */
  readonly name: string;
}

const LIST_MODES: Record<string, ListMode> = {
  keep: "keep",
  error: "error",
  empty: "empty",
  defaultonly: "defaultonly",
  "default-only": "defaultonly",
  explicit: "explicit",
};

export default function createFilter(): Filter<ExportnameHandle> {
  let defaultName: string | undefined;
  let listMode: ListMode = "keep";
  let strict = false;
  const explicit: string[] = [];
  let descMode: DescMode = "keep";
  let desc = "";

  /** nbdkit's get_desc: the description to send for `name`. */
  async function getDesc(name: string, def: string | null | undefined): Promise<string | null> {
    switch (descMode) {
      case "keep":
        return def ?? null;
      case "none":
        return null;
      case "fixed":
        return desc;
      case "script": {
        const out = await runDescScript(desc, name);
        // A script that could not run (or timed out) leaves the description
        // from below, as nbdkit's get_desc does; empty output means none.
        if (out === null) return def ?? null;
        return out === "" ? null : out;
      }
    }
  }

  async function defaultExport(lower: LowerBackend, p: ListParams): Promise<string | null> {
    // When strict, "" is only usable if it was listed explicitly.
    if (strict) return explicit.includes("") ? (defaultName ?? "") : null;
    if (defaultName !== undefined) return defaultName;
    return lower.defaultExport(p);
  }

  return {
    name: "exportname",
    version: "1.0.0",
    longname: "nbdstate exportname filter",
    description: "Adjust export names and descriptions between client and plugin.",
    configHelp:
      'default-export=<NAME>     Canonical name for the "" default export.\n' +
      "exportname-list=<MODE>    Which exports to advertise: keep (default), error,\n" +
      "                          empty, defaultonly, explicit.\n" +
      "exportname-strict=<BOOL>  Limit clients to explicit exports (default false).\n" +
      "exportname=<NAME>         Add an explicit export name, may be repeated.\n" +
      "exportdesc=<MODE>         Set descriptions according to mode: keep (default),\n" +
      "                          none, fixed:STRING, script:SCRIPT.",

    config(next, key, value) {
      switch (key) {
        case "default-export":
        case "default_export":
          // An empty NAME is the same as not giving the parameter.
          defaultName = value === "" ? undefined : value;
          return;
        case "exportname-list":
        case "exportname_list": {
          const m = LIST_MODES[value];
          if (m === undefined) throw new Error(`exportname: unrecognized exportname-list mode: ${value}`);
          listMode = m;
          return;
        }
        case "exportname-strict":
        case "exportname_strict":
          try {
            strict = parseBool(value);
          } catch (e) {
            throw new Error(`exportname: exportname-strict: ${(e as Error).message}`);
          }
          return;
        case "exportname":
          explicit.push(value);
          return;
        case "exportdesc":
          if (value === "keep" || value === "none") {
            descMode = value;
            desc = "";
          } else if (value.startsWith("fixed:")) {
            descMode = "fixed";
            desc = value.slice(6);
          } else if (value.startsWith("script:")) {
            descMode = "script";
            desc = value.slice(7);
          } else {
            throw new Error(`exportname: unrecognized exportdesc mode: ${value}`);
          }
          return;
        default:
          return next(key, value);
      }
    },

    async listExports(lower, p): Promise<ExportEntry[]> {
      let source: ExportEntry[];
      switch (listMode) {
        case "error":
          throw new NbdError(NBD_EPERM, "exportname: export list restricted by policy");
        case "empty":
          return [];
        case "defaultonly": {
          // As nbdkit (nbdkit_use_default_export): the canonical default
          // name, without a description; nothing when there is no default
          // (e.g. exportname-strict=true without exportname="").
          const def = await defaultExport(lower, p);
          return def === null ? [] : [{ name: def }];
        }
        case "explicit":
          source = explicit.map((name) => ({ name }));
          break;
        case "keep":
          source = await lower.listExports(p);
          break;
      }
      const out: ExportEntry[] = [];
      for (const e of source) {
        const d = await getDesc(e.name, e.description);
        out.push(d === null ? { name: e.name } : { name: e.name, description: d });
      }
      return out;
    },

    defaultExport,

    async open(a) {
      let name = a.exportName;
      if (name === "") {
        // As nbdkit does for every layer: "" means this layer's default.
        const def = await defaultExport(a.lower, { readonly: a.readonly, tls: a.tls });
        if (def === null) throw new NbdError(NBD_EINVAL, 'exportname: default export ("") not permitted');
        name = def;
      }
      if (strict && !explicit.includes(name)) {
        throw new NbdError(NBD_EINVAL, `exportname: export '${name.slice(0, 256)}' not found`);
      }
      await a.next(a.readonly, name);
      return { name };
    },

    async exportDescription(next, h) {
      const def = descMode === "keep" ? await next.exportDescription() : null;
      return getDesc(h.name, def);
    },
  };
}
