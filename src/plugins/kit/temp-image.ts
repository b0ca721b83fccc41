// Temporary image files for the plugins that build a disk at startup
// (linuxdisk, floppy, iso): made in $TMPDIR (default /var/tmp, which is
// usually larger than a tmpfs /tmp, as nbdkit), private, and unlinked as
// soon as they are built so nothing is left behind.

import { randomBytes } from "node:crypto";
import { spawn } from "node:child_process";
import { open, unlink, type FileHandle } from "node:fs/promises";
import { delimiter, join } from "node:path";

/** $TMPDIR, else /var/tmp. */
export function largeTmpdir(): string {
  return process.env.TMPDIR || "/var/tmp";
}

export interface TempImage {
  path: string;
  fh: FileHandle;
  /** Remove the name (the open handle keeps the data until closed). */
  unlink(): Promise<void>;
}

/** A new empty private file in $TMPDIR named PREFIX-RANDOM. */
export async function tempImage(who: string, prefix: string): Promise<TempImage> {
  const path = join(largeTmpdir(), `${prefix}-${randomBytes(8).toString("hex")}`);
  let fh: FileHandle;
  try {
    fh = await open(path, "wx+", 0o600);
  } catch (e) {
    throw new Error(`${who}: cannot create a temporary file in ${largeTmpdir()}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  let linked = true;
  return {
    path,
    fh,
    async unlink() {
      if (linked) {
        linked = false;
        await unlink(path).catch(() => {});
      }
    },
  };
}

/** PATH with the sbin directories (mkfs, mke2fs) added if missing. */
export function sbinPath(): string {
  const parts = (process.env.PATH ?? "/usr/bin:/bin").split(delimiter).filter(Boolean);
  for (const d of ["/usr/local/sbin", "/usr/sbin", "/sbin"]) if (!parts.includes(d)) parts.push(d);
  return parts.join(delimiter);
}

export interface ToolResult {
  stdout: string;
  stderr: string;
}

/**
 * Run a program (no shell) to completion. Rejects with one line: WHO: WHAT
 * exited with code N: the last line it printed on stderr.
 */
export function runTool(
  who: string, what: string, argv: readonly string[],
  opts: { env?: NodeJS.ProcessEnv; stdoutFd?: number; keepStdout?: boolean } = {},
): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const out = opts.stdoutFd ?? (opts.keepStdout ? "pipe" : "ignore");
    const child = spawn(argv[0]!, argv.slice(1), {
      stdio: ["ignore", out, "pipe"],
      env: opts.env ?? { ...process.env, PATH: sbinPath() },
    });
    let stdout = "";
    let stderr = "";
    child.stdout?.setEncoding("utf8");
    child.stdout?.on("data", (s: string) => {
      if (stdout.length < 1 << 20) stdout += s;
    });
    child.stderr!.setEncoding("utf8");
    child.stderr!.on("data", (s: string) => {
      if (stderr.length < 64 * 1024) stderr += s;
    });
    child.on("error", (e) => reject(new Error(`${who}: cannot run ${what}: ${(e as NodeJS.ErrnoException).code ?? e.message}`)));
    child.on("close", (code, signal) => {
      if (code === 0) return resolve({ stdout, stderr });
      const last = stderr.trim().split("\n").filter(Boolean).pop()?.trim();
      const how = signal ? `killed by signal ${signal}` : `exited with code ${code}`;
      reject(new Error(`${who}: ${what} ${how}${last ? `: ${last}` : ""}`));
    });
  });
}
