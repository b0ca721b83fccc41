// NBD_OPT_ABORT: "The client desires to abort the negotiation and terminate
// the session. The server MUST reply with NBD_REP_ACK."
import { NBD_OPT_ABORT } from "../protocol/constants.js";
import { reason } from "./assemble.js";
import type { OptionRecord } from "./record.js";

export const abortOption: OptionRecord = {
  option: NBD_OPT_ABORT,
  event: "NBD_OPT_ABORT",
  beforeTls: "allow",
  decode: () => ({}),
  examples: [Buffer.alloc(0)],
  transitions: [{ target: "CLOSED", actions: ["replyAck", reason("client sent NBD_OPT_ABORT")] }],
};
