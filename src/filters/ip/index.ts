// ip filter: allow or deny clients by address, CIDR range, or (unix
// sockets) peer pid/uid/gid, as nbdkit-ip-filter(1). The allow list is
// checked first, then the deny list; a client matching neither is allowed.

import { NbdError, type Filter } from "../../backend/types.js";
import { NBD_EPERM } from "../../protocol/constants.js";
import { matches, parseRules, type Rule } from "./rules.js";

export default function createFilter(): Filter {
  const allow: Rule[] = [];
  const deny: Rule[] = [];

  async function permitted(peer: Parameters<typeof matches>[1]): Promise<boolean> {
    for (const r of allow) if (await matches(r, peer)) return true;
    for (const r of deny) if (await matches(r, peer)) return false;
    return true;
  }

  return {
    name: "ip",
    version: "1.0.0",
    longname: "nbdstate ip filter",
    description: "Filter clients by IP address, process ID, user ID or group ID.",
    configHelp:
      "allow=addr[,addr...]    Set allow list.\n" +
      "deny=addr[,addr...]     Set deny list.",
    config(next, key, value) {
      if (key === "allow") allow.push(...parseRules(value));
      else if (key === "deny") deny.push(...parseRules(value));
      else return next(key, value);
    },
    async preconnect(next, readonly, peer) {
      await next(readonly);
      if (!(await permitted(peer))) {
        const who = peer.address ?? peer.family;
        throw new NbdError(NBD_EPERM, `ip: client not permitted to connect because of the allow/deny lists (${who})`);
      }
    },
  };
}
