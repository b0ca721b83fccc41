// Detection of the external tools the interop suites drive (nbdinfo,
// nbdcopy, qemu-img, python3-libnbd, ...).
//
// Policy: a missing tool skips the suite with a warning naming the Debian
// package to install, except under CI (CI=true), where a missing tool is a
// failure: .ci/run installs every one of them, so their absence there means
// the CI script is broken, and silently skipping would hide it.
import { spawnSync } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { delimiter, join } from "node:path";

const cache = new Map<string, boolean>();

/** Whether `cmd` is an executable on PATH (or an absolute path to one). */
export function hasTool(cmd: string): boolean {
  const hit = cache.get(cmd);
  if (hit !== undefined) return hit;
  let found = false;
  const candidates = cmd.includes("/")
    ? [cmd]
    : (process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin")
        .split(delimiter)
        .filter(Boolean)
        .concat(["/usr/sbin", "/sbin"])
        .map((dir) => join(dir, cmd));
  for (const path of candidates) {
    try {
      accessSync(path, constants.X_OK);
      found = true;
      break;
    } catch {
      // keep looking
    }
  }
  cache.set(cmd, found);
  return found;
}

/** The Python that has the libnbd bindings (Debian's python3-libnbd). */
export const PYTHON = "/usr/bin/python3";

/** Whether `/usr/bin/python3 -c 'import nbd'` works. */
export function hasPythonLibnbd(): boolean {
  const key = "python3:nbd";
  const hit = cache.get(key);
  if (hit !== undefined) return hit;
  const r = spawnSync(PYTHON, ["-c", "import nbd"], { stdio: "ignore", timeout: 20_000 });
  const ok = r.status === 0;
  cache.set(key, ok);
  return ok;
}

function missing(what: string, debianPackage: string): false {
  const msg = `${what} not found: install the Debian package ${debianPackage} (apt-get install -y ${debianPackage})`;
  if (process.env.CI === "true") {
    throw new Error(`[CI] required ${msg}`);
  }
  console.warn(`SKIP: ${msg}`);
  return false;
}

/**
 * Returns whether `cmd` is present. When absent: throws under CI=true
 * (the test file fails, naming the package), otherwise warns and returns
 * false so the caller can `describe.skipIf(!ok)`.
 *
 * `cmd` may be the special name "python3-libnbd" (checks `import nbd`).
 */
export function requireTool(cmd: string, debianPackage: string): boolean {
  const present = cmd === "python3-libnbd" ? hasPythonLibnbd() : hasTool(cmd);
  return present || missing(cmd === "python3-libnbd" ? "python3 module nbd" : `command ${cmd}`, debianPackage);
}

/** requireTool for every pair; true only if all are present (all are checked). */
export function requireTools(pairs: ReadonlyArray<readonly [cmd: string, debianPackage: string]>): boolean {
  let ok = true;
  for (const [cmd, pkg] of pairs) ok = requireTool(cmd, pkg) && ok;
  return ok;
}

/** python3-libnbd: `/usr/bin/python3 -c 'import nbd'`. */
export function requirePythonLibnbd(): boolean {
  return requireTool("python3-libnbd", "python3-libnbd");
}

// Commonly needed pairs, so that suites name the same packages.
export const TOOLS = {
  nbdinfo: ["nbdinfo", "libnbd-bin"],
  nbdcopy: ["nbdcopy", "libnbd-bin"],
  nbdsh: ["nbdsh", "libnbd-bin"],
  qemuImg: ["qemu-img", "qemu-utils"],
  qemuIo: ["qemu-io", "qemu-utils"],
  nbdkit: ["nbdkit", "nbdkit"],
  fio: ["fio", "fio"],
} as const satisfies Record<string, readonly [string, string]>;
