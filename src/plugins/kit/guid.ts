// GPT GUIDs: text form <-> the 16 on-disk bytes (the first three groups
// little-endian, the last two as written), and fresh random ones.

import { randomUUID } from "node:crypto";

const GUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The on-disk bytes of a GUID ("0FC63DAF-..." or "{0FC63DAF-...}"), or null if malformed. */
export function parseGuid(text: string): Buffer | null {
  const s = text.length === 38 && text.startsWith("{") && text.endsWith("}") ? text.slice(1, -1) : text;
  if (!GUID_RE.test(s)) return null;
  const hex = s.replace(/-/g, "");
  const b = Buffer.from(hex, "hex");
  b.subarray(0, 4).reverse();
  b.subarray(4, 6).reverse();
  b.subarray(6, 8).reverse();
  return b;
}

/** The text form (upper case) of 16 on-disk GUID bytes. */
export function formatGuid(b: Buffer): string {
  const c = Buffer.from(b);
  c.subarray(0, 4).reverse();
  c.subarray(4, 6).reverse();
  c.subarray(6, 8).reverse();
  const h = c.toString("hex").toUpperCase();
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** A random (version 4) GUID, as on-disk bytes. */
export function randomGuid(): Buffer {
  return parseGuid(randomUUID())!;
}
