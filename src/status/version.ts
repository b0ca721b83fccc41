// nbdstate's version for the status page header, from the package's
// package.json (two levels above src/status and dist/status).

import { readFileSync } from "node:fs";

export function statusVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version?: unknown };
    return typeof pkg.version === "string" ? pkg.version : "";
  } catch {
    return "";
  }
}
