// limit filter: at most limit=N clients at once (default 1; 0 disables),
// as nbdkit-limit-filter(1). A client counts from open to close;
// preconnect refuses one more before its handshake even starts.

import { NbdError, type Filter } from "../../backend/types.js";
import { NBD_EPERM } from "../../protocol/constants.js";

export default function createFilter(): Filter<{ counted: boolean }> {
  let limit = 1;
  let connections = 0;

  const tooMany = () =>
    new NbdError(NBD_EPERM, `limit: too many clients connected, connection rejected (limit is ${limit})`);

  return {
    name: "limit",
    version: "1.0.0",
    longname: "nbdstate limit filter",
    description: "Limit the number of clients that can connect concurrently.",
    configHelp: "limit=N                 Limit the number of concurrent clients (default 1, 0 = no limit).",
    config(next, key, value) {
      if (key !== "limit") return next(key, value);
      if (!/^\d+$/.test(value)) throw new Error(`limit: limit: could not parse number: ${value}`);
      limit = Number(value);
    },
    async preconnect(next, readonly) {
      await next(readonly);
      if (limit > 0 && connections >= limit) throw tooMany();
    },
    async open(a) {
      // The count also guards clients that passed preconnect together.
      if (limit > 0 && connections >= limit) throw tooMany();
      connections++;
      try {
        await a.next();
      } catch (e) {
        connections--;
        throw e;
      }
      return { counted: true };
    },
    close(h) {
      if (h.counted) connections--;
    },
  };
}
