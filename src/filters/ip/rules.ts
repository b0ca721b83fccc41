// Address rules of the ip filter, as nbdkit-ip-filter(1): keywords
// (all/any, allipv4/anyipv4, allipv6/anyipv6, allunix/anyunix), single
// addresses, CIDR ranges, and pid:/uid:/gid: for unix socket peers.

import net from "node:net";
import type { PeerInfo } from "../../backend/types.js";

export type Rule =
  | { kind: "any" }
  | { kind: "family"; family: "ipv4" | "ipv6" | "unix" }
  | { kind: "cidr"; family: "ipv4" | "ipv6"; bits: bigint; prefix: number }
  | { kind: "cred"; field: "pid" | "uid" | "gid"; value: number };

const KEYWORDS: Record<string, Rule> = {
  all: { kind: "any" },
  any: { kind: "any" },
  allipv4: { kind: "family", family: "ipv4" },
  anyipv4: { kind: "family", family: "ipv4" },
  allipv6: { kind: "family", family: "ipv6" },
  anyipv6: { kind: "family", family: "ipv6" },
  allunix: { kind: "family", family: "unix" },
  anyunix: { kind: "family", family: "unix" },
};

function toBits(addr: string): { family: "ipv4" | "ipv6"; bits: bigint } | null {
  if (net.isIPv4(addr)) {
    return { family: "ipv4", bits: addr.split(".").reduce((a, o) => (a << 8n) | BigInt(Number(o)), 0n) };
  }
  if (!net.isIPv6(addr)) return null;
  // Expand "::" and an embedded IPv4 tail into eight 16-bit groups.
  let s = addr;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (v4) {
    const b = toBits(v4[1]!)!.bits;
    s = s.slice(0, -v4[1]!.length) + `${(b >> 16n).toString(16)}:${(b & 0xffffn).toString(16)}`;
  }
  const [head, tail] = s.split("::") as [string, string | undefined];
  const h = head ? head.split(":") : [];
  const t = tail !== undefined && tail !== "" ? tail.split(":") : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill("0"), ...t];
  return { family: "ipv6", bits: groups.reduce((a, g) => (a << 16n) | BigInt(parseInt(g, 16)), 0n) };
}

export function parseRule(text: string): Rule {
  const t = text.trim();
  const kw = KEYWORDS[t.toLowerCase()];
  if (kw) return kw;
  const cred = /^(pid|uid|gid):(\d+)$/.exec(t);
  if (cred) return { kind: "cred", field: cred[1] as "pid" | "uid" | "gid", value: Number(cred[2]) };
  const [addr, len] = t.split("/") as [string, string | undefined];
  const a = toBits(addr);
  if (!a) throw new Error(`ip: cannot parse address or keyword '${t}'`);
  const max = a.family === "ipv4" ? 32 : 128;
  const prefix = len === undefined ? max : Number(len);
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max || (len !== undefined && !/^\d+$/.test(len))) {
    throw new Error(`ip: bad prefix length in '${t}'`);
  }
  return { kind: "cidr", family: a.family, bits: a.bits >> BigInt(max - prefix), prefix };
}

export function parseRules(list: string): Rule[] {
  return list.split(",").filter((s) => s.trim() !== "").map(parseRule);
}

export async function matches(rule: Rule, peer: PeerInfo): Promise<boolean> {
  switch (rule.kind) {
    case "any":
      return true;
    case "family":
      return peer.family === rule.family;
    case "cidr": {
      if (!peer.address) return false;
      const a = toBits(peer.address);
      if (!a || a.family !== rule.family) return false;
      const max = a.family === "ipv4" ? 32 : 128;
      return a.bits >> BigInt(max - rule.prefix) === rule.bits;
    }
    case "cred": {
      if (peer.family !== "unix" || !peer.credentials) return false;
      const c = await peer.credentials();
      return c !== null && c[rule.field] === rule.value;
    }
  }
}
