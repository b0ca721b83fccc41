// NBD strings (export names, descriptions, meta context queries):
// "MUST NOT contain NUL characters ... MUST be no longer than 4096 bytes"
// (doc/proto.md, "Strings").

import { MAX_STRING } from "./constants.js";

/** True if `s` is a valid NBD string: no NUL, at most 4096 bytes of UTF-8. */
export function isNbdString(s: string): boolean {
  return !s.includes("\0") && Buffer.byteLength(s) <= MAX_STRING;
}

/** Cut `s` to a valid NBD string (NULs dropped, at most 4096 bytes, on a character boundary). */
export function clipNbdString(s: string): string {
  let d = s.includes("\0") ? s.replace(/\0/g, "") : s;
  if (Buffer.byteLength(d) <= MAX_STRING) return d;
  d = Buffer.from(d, "utf8").subarray(0, MAX_STRING).toString("utf8");
  // A cut inside a multi-byte character leaves U+FFFD (3 bytes): drop it.
  while (Buffer.byteLength(d) > MAX_STRING || d.endsWith("\uFFFD")) d = d.slice(0, -1);
  return d;
}
