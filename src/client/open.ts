// openClient: connect, negotiate what the caller wants, and go to an export.

import { NbdClient } from "./client.js";
import type { OpenOptions } from "./open-options.js";

export type { OpenOptions } from "./open-options.js";

/** See NbdClient.open. */
export function openClient(o: OpenOptions): Promise<NbdClient> {
  return NbdClient.open(o);
}
