// NBD_OPT_EXTENDED_HEADERS (doc/proto.md, extension-ext-header branch): "The
// client MUST NOT send any additional data with the option ... When
// successful, this option takes precedence over structured replies" (so
// they are implied), and "the client MUST use the 32-byte extended request
// header ... and the server MUST use the 32-byte extended reply header."
// A second request is refused (libnbd: "the server detected a duplicate
// request"), as qemu-nbd does.
import { assign } from "xstate";
import { NBD_OPT_EXTENDED_HEADERS } from "../protocol/constants.js";
import { err } from "./assemble.js";
import type { OptionRecord, OptionsContext } from "./record.js";

export const extendedHeadersOption: OptionRecord = {
  option: NBD_OPT_EXTENDED_HEADERS,
  event: "NBD_OPT_EXTENDED_HEADERS",
  decode: () => ({}),
  examples: [Buffer.alloc(0), Buffer.alloc(4, 0xaa)],
  transitions: [
    { guard: "nonEmptyPayload", actions: err("NBD_REP_ERR_INVALID", "NBD_OPT_EXTENDED_HEADERS takes no data") },
    { guard: "extendedHeadersOn", actions: err("NBD_REP_ERR_INVALID", "extended headers are already negotiated") },
    // --no-sr turns off every reply format past the simple one.
    { guard: "extendedHeadersRefused", actions: err("NBD_REP_ERR_UNSUP", "extended headers are disabled on this server") },
    { actions: ["enableExtendedHeaders", "replyAck"] },
  ],
  guards: {
    extendedHeadersRefused: ({ context }: { context: OptionsContext }) => context.noStructuredReplies,
  },
  actions: {
    enableExtendedHeaders: assign({ extendedHeaders: true, structuredReplies: true }),
  },
};
