// Reading a secret as nbdkit_read_password does: VALUE itself, "-" (typed
// at the terminal, not echoed), "+FILE" (the file's contents) or "-FD" (read
// from an inherited file descriptor, then closed). One trailing newline is
// dropped from a file or descriptor, as nbdkit does.

import { closeSync, readFileSync } from "node:fs";

function chomp(b: Buffer): Buffer {
  let n = b.length;
  if (n > 0 && b[n - 1] === 0x0a) n--;
  if (n > 0 && b[n - 1] === 0x0d) n--;
  return b.subarray(0, n);
}

/** Read from the terminal with echo off (raw mode), up to Enter. */
function readTerminal(prompt: string): Promise<Buffer> {
  const stdin = process.stdin;
  if (!stdin.isTTY) return Promise.reject(new Error("passphrase=-: standard input is not a terminal (use passphrase=+FILE)"));
  process.stderr.write(prompt);
  stdin.setRawMode(true);
  stdin.resume();
  return new Promise((resolve, reject) => {
    const bytes: number[] = [];
    const done = (err?: Error) => {
      stdin.setRawMode(false);
      stdin.pause();
      stdin.off("data", onData);
      process.stderr.write("\n");
      if (err) reject(err);
      else resolve(Buffer.from(bytes));
    };
    const onData = (chunk: Buffer) => {
      for (const c of chunk) {
        if (c === 0x0d || c === 0x0a) return done();
        if (c === 0x03) return done(new Error("passphrase: interrupted"));
        if (c === 0x7f || c === 0x08) bytes.pop();
        else bytes.push(c);
      }
    };
    stdin.on("data", onData);
  });
}

export async function readPassphrase(value: string, what: string): Promise<Buffer> {
  if (value === "-") return readTerminal(`${what}: `);
  if (/^-[0-9]+$/.test(value)) {
    const fd = Number(value.slice(1));
    if (fd <= 2) throw new Error(`${what}=-${fd}: cannot read a passphrase from stdin, stdout or stderr`);
    try {
      return chomp(readFileSync(fd));
    } finally {
      try {
        closeSync(fd);
      } catch {
        /* already closed */
      }
    }
  }
  if (value.startsWith("+")) return readFile(value.slice(1), what);
  return Buffer.from(value, "utf8");
}

export function readFile(path: string, what: string): Buffer {
  try {
    return chomp(readFileSync(path));
  } catch (e) {
    throw new Error(`${what}: cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}
