// eval plugin: the sh plugin's protocol with each method a shell fragment
// given on the command line (get_size='echo 64M' pread='dd ...').

import { chmodSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Plugin } from "../../backend/types.js";
import { ScriptHost, type ShHandle } from "../sh/host.js";
import { callText, scriptMethods } from "../sh/methods.js";

/** Keys that define a method; any other key goes to the config fragment. */
export const METHODS: readonly string[] = [
  "after_fork", "block_size", "cache", "can_cache", "can_extents", "can_fast_zero", "can_flush", "can_fua",
  "can_multi_conn", "can_trim", "can_write", "can_zero", "close", "config", "config_complete", "default_export",
  "dump_plugin", "export_description", "extents", "flush", "get_ready", "get_size", "is_rotational",
  "list_exports", "missing", "open", "pread", "preconnect", "pwrite", "thread_model", "trim", "unload", "zero",
];
const KNOWN = new Set(METHODS);

/** A data method implies its can_* answer, as nbdkit does for C plugins. */
const IMPLIED: ReadonlyArray<readonly [method: string, can: string, fragment: string]> = [
  ["pwrite", "can_write", "exit 0"],
  ["flush", "can_flush", "exit 0"],
  ["trim", "can_trim", "exit 0"],
  ["zero", "can_zero", "exit 0"],
  ["extents", "can_extents", "exit 0"],
  ["cache", "can_cache", "echo native"],
];

export default function createPlugin(): Plugin<ShHandle> {
  /** method -> the file in $tmpdir holding its fragment. */
  const scripts = new Map<string, string>();
  /** Run for any method not given: "exit 2" unless missing= says otherwise. */
  let missing: string | undefined;
  const host = new ScriptHost((method) => scripts.get(method) ?? missing);
  const methods = scriptMethods(host);

  /** Save a fragment as $tmpdir/METHOD (run by /bin/sh: it has no "#!"), as nbdkit does. */
  function save(method: string, fragment: string): string {
    const path = join(host.tmpdir, method);
    rmSync(path, { force: true });
    writeFileSync(path, fragment === "" || fragment.endsWith("\n") ? fragment : fragment + "\n");
    chmodSync(path, 0o500);
    return path;
  }

  return {
    name: "eval",
    version: "1.0.0",
    longname: "nbdstate eval plugin",
    description: "Serve what shell fragments given on the command line answer, as nbdkit-eval-plugin.",
    configHelp:
      "get_size=' SCRIPT '    (and pread=, pwrite=, ... any method of the sh plugin)\n" +
      "missing=' SCRIPT '     Run for every method not given (default: exit 2).\n" +
      "[other key=value pairs go to the config=' SCRIPT ']",

    load() {
      host.createTmpdir();
      missing = save("missing", "exit 2");
    },

    async config(key, value) {
      if (KNOWN.has(key)) {
        if (scripts.has(key)) throw new Error(`eval: method ${key} defined more than once on the command line`);
        const path = save(key, value);
        scripts.set(key, path);
        if (key === "missing") missing = path;
        return;
      }
      const out = await callText(host, "config", [key, value]);
      if (out === null) {
        throw new Error(`${host.who("config")}: callback '${key}' is unknown, and there is no 'config' callback to handle it`);
      }
    },

    async configComplete() {
      for (const [method, can, fragment] of IMPLIED) {
        if (scripts.has(method) && !scripts.has(can)) scripts.set(can, save(can, fragment));
      }
      await callText(host, "config_complete", []);
      await methods.threadModel();
    },

    ...methods,
  };
}
