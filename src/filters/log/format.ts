// The log filter's line format, field for field as nbdkit-log-filter
// writes it, so that parsers of nbdkit logs read ours.

import { toNbdErrno } from "../../backend/errors.js";
import { NBD_STATE_HOLE, NBD_STATE_ZERO } from "../../protocol/constants.js";
import type { Extent } from "../../backend/types.js";

export type EntryType = "ENTER" | "LEAVE" | "PRINT";

const SAFE = /^[a-zA-Z0-9.\-_=,:/]+$/;

/** A string as nbdkit's shell_quote writes it: bare if safe, else in double quotes. */
export function shellQuote(s: string): string {
  if (s.length > 0 && SAFE.test(s)) return s;
  return `"${s.replace(/[$`\\"]/g, (c) => `\\${c}`)}"`;
}

const pad = (n: number, w = 2) => String(n).padStart(w, "0");

/** "YYYY-MM-DD HH:MM:SS.uuuuuu" in UTC, microseconds as gettimeofday gives them. */
export function timestamp(): string {
  const t = performance.timeOrigin + performance.now();
  const ms = Math.floor(t);
  const d = new Date(ms);
  const usec = Math.floor((t - Math.floor(t / 1000) * 1000) * 1000) % 1000000;
  return (
    `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
    `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}.${pad(usec, 6)}`
  );
}

/** One line of the log file (without the newline). */
export function fileLine(connection: number | null, id: number, act: string, type: EntryType, fields: string): string {
  let s = timestamp() + " ";
  if (connection !== null) s += `connection=${connection} `;
  s += (type === "LEAVE" ? "..." : "") + act;
  if (id) s += ` id=${id}`;
  if (fields !== "") s += " " + fields;
  if (type === "ENTER") s += " ...";
  return s;
}

/** The shell text a log script runs for one entry: variable assignments, then the script. */
export function scriptText(connection: number | null, id: number, act: string, type: EntryType, fields: string, script: string): string {
  let s = `act=${act}\n`;
  if (connection !== null) s += `connection=${connection}\n`;
  s += `type=${type}\n`;
  if (id) s += `id=${id}\n`;
  return s + fields + "\n" + script;
}

const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM",
  5: "EIO",
  12: "ENOMEM",
  28: "ENOSPC",
  108: "ESHUTDOWN",
  95: "ENOTSUP",
  75: "EOVERFLOW",
};

/** "return=0", or "return=-1 error=EIO" as the client will see it. */
export function result(err?: unknown): string {
  if (err === undefined) return "return=0";
  return `return=-1 error=${ERRNO_NAMES[toNbdErrno(err)] ?? "EINVAL"}`;
}

/** Extents listed from `offset`: (0x0 0x8000 "" 0x8000 0x8000 "hole,zero"). */
export function extentsList(offset: number, extents: Extent[]): string {
  const parts: string[] = [];
  let pos = offset;
  for (const e of extents) {
    const t = [e.type & NBD_STATE_HOLE ? "hole" : "", e.type & NBD_STATE_ZERO ? "zero" : ""].filter(Boolean).join(",");
    parts.push(`0x${pos.toString(16)} 0x${e.length.toString(16)} "${t}"`);
    pos += e.length;
  }
  return `extents=(${parts.join(" ")}) return=0`;
}

export const hex = (n: number) => `0x${n.toString(16)}`;
