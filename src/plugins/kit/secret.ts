// Passwords and other secrets given as nbdkit gives them (nbdkit_read_password):
//   VALUE      the secret itself
//   -          read it from standard input (a prompt, without echo, on a terminal)
//   +FILENAME  read it from a file
//   -FD        read it from an inherited file descriptor
// A file or descriptor is read to its end; one trailing newline is dropped.
// Read at config time (before the server detaches), as nbdkit does.

import { closeSync, openSync, readFileSync, readSync } from "node:fs";

function dropNewline(s: string): string {
  return s.replace(/\r?\n$/, "");
}

/** One line from standard input, read synchronously; on a terminal, prompt and do not echo. */
function readStdinLine(prompt: string): string {
  const tty = process.stdin.isTTY === true;
  if (tty) {
    process.stderr.write(prompt);
    process.stdin.setRawMode?.(true);
  }
  const bytes: number[] = [];
  const one = Buffer.alloc(1);
  let sawEnd = false;
  try {
    for (;;) {
      let n: number;
      try {
        n = readSync(0, one, 0, 1, null);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "EAGAIN") continue;
        if ((e as NodeJS.ErrnoException).code === "EOF") break;
        throw e;
      }
      if (n === 0) break;
      const b = one[0]!;
      if (b === 0x0a || b === 0x0d) {
        sawEnd = true;
        break;
      }
      if (tty && b === 0x03) throw new Error("interrupted");
      bytes.push(b);
    }
  } finally {
    if (tty) {
      process.stdin.setRawMode?.(false);
      process.stderr.write("\n");
    }
  }
  // Nothing at all (not even an empty line): standard input is empty or
  // /dev/null, as for a server running in the background.
  if (!sawEnd && bytes.length === 0) throw Object.assign(new Error("nothing"), { code: "EMPTY" });
  return Buffer.from(bytes).toString("utf8");
}

function readFd(fd: number): string {
  const parts: Buffer[] = [];
  const chunk = Buffer.alloc(4096);
  for (;;) {
    const n = readSync(fd, chunk, 0, chunk.length, null);
    if (n === 0) break;
    parts.push(Buffer.from(chunk.subarray(0, n)));
  }
  return Buffer.concat(parts).toString("utf8");
}

/**
 * The secret a parameter stands for. `what` names it in errors and in the
 * prompt ("curl: password"). Throws a one-line Error if it cannot be read.
 */
export function readSecret(what: string, value: string): string {
  try {
    if (value === "-") return readStdinLine(`${what}: `);
    if (value.startsWith("+")) return dropNewline(readFileSync(value.slice(1), "utf8"));
    if (/^-[0-9]+$/.test(value)) {
      const fd = Number(value.slice(1));
      try {
        return dropNewline(readFd(fd));
      } finally {
        // nbdkit closes the descriptor once read; so do we (never 0-2).
        if (fd > 2) closeSync(fd);
      }
    }
    return value;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const hint = " (a server in the background has no standard input nor inherited descriptors: use -f, or +FILE)";
    const why =
      err.code === "ENOENT" ? "no such file"
      : err.code === "EACCES" ? "permission denied"
      : err.code === "EMPTY" ? `it is empty${hint}`
      : err.code === "EBADF" ? `EBADF${hint}`
      : err.code ?? err.message;
    const from = value === "-" ? "standard input" : value.startsWith("+") ? value.slice(1) : `file descriptor ${value.slice(1)}`;
    throw new Error(`${what}: cannot read it from ${from}: ${why}`);
  }
}

/** Open a file only to check that it can be read (for errors at config time). */
export function checkReadable(what: string, path: string): void {
  try {
    closeSync(openSync(path, "r"));
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new Error(`${what}: cannot read ${path}: ${err.code === "ENOENT" ? "no such file" : err.code ?? err.message}`);
  }
}
