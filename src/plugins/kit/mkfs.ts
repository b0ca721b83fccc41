// Making a fresh disk file for tmpdisk and ondemand: by default mkfs
// (run directly, no shell), or the server administrator's own command=
// through /bin/sh with nbdkit's variables. The variables reach the shell as
// environment variables, never spliced into the script text, so a path
// that holds a client's export name cannot inject shell syntax.

import { spawn } from "node:child_process";
import { open } from "node:fs/promises";
import { delimiter } from "node:path";

export interface DiskRecipe {
  /** command= (a shell fragment), or undefined for mkfs. */
  command?: string;
  /** size= in bytes. */
  size: number;
  /** Every other key=value, in command-line order ($type, $label, ...). */
  vars: [string, string][];
}

/** The mkfs options for a filesystem type, as nbdkit's default command chooses them. */
function mkfsArgs(type: string, label: string | undefined, disk: string): string[] {
  let extra: string[] = [];
  let labelOpt = "-L";
  if (/^ext.$/.test(type)) extra = ["-F"];
  else if (/fat$/.test(type) || type === "msdos") {
    extra = ["-I"];
    labelOpt = "-n"; // mkfs.fat has no -L (nbdkit passes -L, and fails)
  } else if (type === "ntfs") {
    extra = ["-Q", "-F"];
    labelOpt = "-n";
  } else if (type === "xfs") extra = ["-f"];
  return ["-t", type, ...extra, ...(label ? [labelOpt, label] : []), disk];
}

/** PATH with the sbin directories (where mkfs lives) added if missing. */
function sbinPath(): string {
  const parts = (process.env.PATH ?? "/usr/bin:/bin").split(delimiter).filter(Boolean);
  for (const d of ["/usr/local/sbin", "/usr/sbin", "/sbin"]) if (!parts.includes(d)) parts.push(d);
  return parts.join(delimiter);
}

/** Run argv; resolve with its stderr, or reject with one line naming it and its last words. */
function runQuiet(who: string, what: string, argv: string[], env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", "ignore", "pipe"], env });
    let err = "";
    child.stderr!.setEncoding("utf8");
    child.stderr!.on("data", (s: string) => {
      if (err.length < 64 * 1024) err += s;
    });
    child.on("error", (e) => reject(new Error(`${who}: cannot run ${what}: ${(e as NodeJS.ErrnoException).code ?? e.message}`)));
    child.on("close", (code, signal) => {
      if (code === 0) return resolve(err);
      const last = err.trim().split("\n").filter(Boolean).pop()?.trim();
      const how = signal ? `killed by signal ${signal}` : `exited with code ${code}`;
      reject(new Error(`${who}: ${what} ${how}${last ? `: ${last}` : ""}`));
    });
  });
}

/**
 * Create the disk at `disk` (which must not exist): a sparse file of the
 * recipe's size formatted with mkfs, or whatever command= makes there.
 * Returns what the command wrote on stderr (for the debug log).
 */
export async function makeDisk(who: string, disk: string, r: DiskRecipe): Promise<string> {
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: sbinPath() };
  if (r.command !== undefined) {
    for (const [k, v] of r.vars) env[k] = v;
    env.disk = disk;
    env.size = String(r.size);
    return runQuiet(who, "command", ["/bin/sh", "-c", r.command], env);
  }
  const get = (k: string) => r.vars.filter(([key]) => key === k).pop()?.[1];
  const type = get("type") || "ext4";
  const fh = await open(disk, "wx", 0o600);
  try {
    await fh.truncate(r.size);
  } finally {
    await fh.close();
  }
  return runQuiet(who, `mkfs -t ${type}`, ["mkfs", ...mkfsArgs(type, get("label") || undefined, disk)], env);
}
