// Making a fresh disk file for tmpdisk and ondemand: by default mkfs
// (run directly, no shell), or the server administrator's own command=
// through /bin/sh with nbdkit's variables. The variables reach the shell as
// environment variables, never spliced into the script text, so a path
// that holds a client's export name cannot inject shell syntax.

import { open } from "node:fs/promises";
import { runTool, sbinPath } from "./temp-image.js";

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
    return (await runTool(who, "command", ["/bin/sh", "-c", r.command], { env })).stderr;
  }
  const get = (k: string) => r.vars.filter(([key]) => key === k).pop()?.[1];
  const type = get("type") || "ext4";
  const fh = await open(disk, "wx", 0o600);
  try {
    await fh.truncate(r.size);
  } finally {
    await fh.close();
  }
  return (await runTool(who, `mkfs -t ${type}`, ["mkfs", ...mkfsArgs(type, get("label") || undefined, disk)], { env })).stderr;
}
