// NBD_OPT_STRUCTURED_REPLY: "The client MUST NOT send any additional data
// with the option, and the server SHOULD reject a request that includes
// data with NBD_REP_ERR_INVALID." Once extended headers are on:
// "NBD_REP_ERR_EXT_HEADER_REQD: The client has already successfully
// negotiated extended headers, which takes precedence over this option."
import { assign } from "xstate";
import { NBD_OPT_STRUCTURED_REPLY } from "../protocol/constants.js";
import { err } from "./assemble.js";
import type { OptionRecord, OptionsContext } from "./record.js";

export const structuredReplyOption: OptionRecord = {
  option: NBD_OPT_STRUCTURED_REPLY,
  event: "NBD_OPT_STRUCTURED_REPLY",
  decode: () => ({}),
  examples: [Buffer.alloc(0), Buffer.alloc(4, 0xaa)],
  transitions: [
    { guard: "nonEmptyPayload", actions: err("NBD_REP_ERR_INVALID", "NBD_OPT_STRUCTURED_REPLY takes no data") },
    { guard: "extendedHeadersOn", actions: err("NBD_REP_ERR_EXT_HEADER_REQD", "extended headers are already negotiated") },
    // --no-sr: as a server that does not know the option.
    { guard: "structuredRepliesRefused", actions: err("NBD_REP_ERR_UNSUP", "structured replies are disabled on this server") },
    { actions: ["enableStructuredReplies", "replyAck"] },
  ],
  guards: {
    structuredRepliesRefused: ({ context }: { context: OptionsContext }) => context.noStructuredReplies,
  },
  actions: {
    enableStructuredReplies: assign({ structuredReplies: true }),
  },
};
