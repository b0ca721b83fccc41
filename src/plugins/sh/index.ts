// sh plugin: a script (any executable) answers every plugin method, one
// process per call, with nbdkit-sh-plugin(3)'s arguments and exit codes.

import { accessSync, chmodSync, constants as C, fstatSync, readFileSync, realpathSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Plugin } from "../../backend/types.js";
import { ScriptHost, unexpectedFalse, type ShHandle } from "./host.js";
import { callText, scriptMethods } from "./methods.js";
import { chomp } from "./parse.js";
import * as S from "./status.js";

export type { ShHandle } from "./host.js";

/** The script named on the command line, as an absolute path (its $0). */
function resolveScript(value: string): string {
  let path: string;
  try {
    path = realpathSync(value);
  } catch (e) {
    throw new Error(`sh: script '${value}': ${(e as NodeJS.ErrnoException).code === "ENOENT" ? "No such file or directory" : (e as Error).message}`);
  }
  try {
    accessSync(path, C.X_OK);
  } catch {
    throw new Error(`sh: script '${path}' is not executable (chmod +x)`);
  }
  return path;
}

/** Read stdin, as nbdkit does for "-" (blocking: /dev/stdin reopens it). */
function readStdin(): Buffer {
  try {
    return readFileSync("/dev/stdin");
  } catch {
    return readFileSync(0);
  }
}

function stdinIsConnection(): boolean {
  try {
    const i = fstatSync(0);
    const o = fstatSync(1);
    return i.isSocket() && i.ino === o.ino && i.dev === o.dev;
  } catch {
    return false;
  }
}

export default function createPlugin(): Plugin<ShHandle> {
  let script: string | undefined;
  let magic: string | undefined;
  const host = new ScriptHost(() => script);
  const methods = scriptMethods(host);

  /** "-": the script comes on stdin, saved as $tmpdir/inline-script.sh. */
  function inlineScript(): string {
    // With -s, stdin is the client's connection, not a script: one socket on
    // both stdin and stdout (Node itself may pass a script on a socketpair).
    if (stdinIsConnection()) throw new Error("sh: an inline script (script '-') is incompatible with -s");
    const text = readStdin();
    if (text.length === 0) {
      throw new Error("sh: the inline script (script '-', read from stdin) is empty; in the background the server has no stdin: use -f");
    }
    const path = join(host.tmpdir, "inline-script.sh");
    writeFileSync(path, text);
    chmodSync(path, 0o500);
    return path;
  }

  return {
    name: "sh",
    version: "1.0.0",
    longname: "nbdstate sh plugin",
    description: "Serve what a script (any executable) answers, one run per method call, as nbdkit-sh-plugin.",
    magicConfigKey: "script",
    configHelp:
      "script=<FILENAME>     (required) The shell script to run ('-' reads it from stdin).\n" +
      "[other arguments may be used by the plugin that you load]",

    load() {
      host.createTmpdir();
    },

    async config(key, value) {
      if (script === undefined) {
        if (key !== "script") throw new Error("sh: the first parameter must be script=/path/to/script");
        script = value === "-" ? inlineScript() : resolveScript(value);
        const r = await host.call("load", []);
        if (r.status === S.FALSE) throw unexpectedFalse(script, "load");
        const key2 = await callText(host, "magic_config_key", []);
        if (key2 !== null) magic = chomp(key2.toString("utf8")) || undefined;
        return;
      }
      // A bare word after the script is for the script's own magic key.
      if (key === "script") {
        if (magic === undefined) throw new Error(`${script}: expecting key=value on the command line but got: ${value}`);
        key = magic;
      }
      const out = await callText(host, "config", [key, value]);
      if (out === null) throw new Error(`${script}: this plugin does not need command line configuration (got '${key}')`);
    },

    async configComplete() {
      if (script === undefined) throw new Error("sh: missing script parameter (nbdstate sh /path/to/script)");
      await callText(host, "config_complete", []);
      await methods.threadModel();
    },

    ...methods,
  };
}
