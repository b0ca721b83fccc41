// Errors of the command line, and how they are printed: one line,
// "nbdstate: <message>", with the stack only under -v.

import { errorMessage as lineOf } from "../backend/errors.js";

export const PROGRAM = "nbdstate";

/** A user error (bad command line, bad parameter): printed without a stack. */
export class CliError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CliError";
  }
}

/** Any thrown value as one line of text, without our own prefix. */
export function errorMessage(e: unknown): string {
  let msg = lineOf(e);
  // Our own prefix may already be there (e.g. a message relayed from a child).
  if (msg.startsWith(`${PROGRAM}: error: `)) msg = msg.slice(PROGRAM.length + 9);
  else if (msg.startsWith(`${PROGRAM}: `)) msg = msg.slice(PROGRAM.length + 2);
  return msg || "unknown error";
}

/** The one line printed for a failure, as nbdkit's: "nbdstate: error: memory: unknown parameter 'foo'". */
export function errorLine(e: unknown): string {
  return `${PROGRAM}: error: ${errorMessage(e)}`;
}

/** Print a failure to stderr: one line, plus the stack when verbose. */
export function reportError(e: unknown, verbose: boolean): void {
  process.stderr.write(errorLine(e) + "\n");
  if (verbose && e instanceof Error && e.stack && !(e instanceof CliError)) {
    process.stderr.write(e.stack + "\n");
  }
}

/** Verbose messages, as nbdkit's "nbdkit: debug: ...". */
export function debug(verbose: boolean, msg: string): void {
  if (verbose) process.stderr.write(`${PROGRAM}: debug: ${msg}\n`);
}
