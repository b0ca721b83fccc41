// [KEY=]VALUE parameters -> (key, value) pairs, as nbdkit assigns them:
// "KEY=VALUE" when KEY is a valid config key, otherwise the whole word is a
// VALUE for the plugin's magic config key (anywhere on the line, as nbdkit
// does when the plugin declares one). Values stay strings: sizes such as
// "1M" are parsed by whoever receives them.

import { isConfigKey } from "./args.js";
import { CliError } from "./errors.js";

export type ConfigPair = [key: string, value: string];

export function resolveParams(
  params: readonly string[],
  magicConfigKey: string | undefined,
  pluginName: string,
): ConfigPair[] {
  const out: ConfigPair[] = [];
  for (const p of params) {
    const eq = p.indexOf("=");
    if (eq > 0 && isConfigKey(p.slice(0, eq))) {
      out.push([p.slice(0, eq), p.slice(eq + 1)]);
    } else if (magicConfigKey) {
      out.push([magicConfigKey, p]);
    } else {
      throw new CliError(
        `expecting key=value on the command line but got: ${p} ` +
          `(plugin '${pluginName}' has no magic config key)`,
      );
    }
  }
  return out;
}
