// NBD_OPT_EXPORT_NAME: the old way into transmission, with no error reply:
// "If the chosen export does not exist or requirements for the chosen
// export are not met ... the server MUST terminate the session." So a
// malformed name (NUL, over 4096 bytes), TLS still required, or extended
// headers already negotiated ("a client that has used
// NBD_OPT_EXTENDED_HEADERS ... MUST NOT use this option") close it.
import { NBD_OPT_EXPORT_NAME } from "../protocol/constants.js";
import { isNbdString } from "../protocol/strings.js";
import { reason } from "./assemble.js";
import { openExportDeclarations, openExportEffects, openExportStates } from "./open-export.js";
import type { OptionRecord } from "./record.js";

export const exportNameOption: OptionRecord = {
  option: NBD_OPT_EXPORT_NAME,
  event: "NBD_OPT_EXPORT_NAME",
  beforeTls: "close",
  onMalformed: "close",
  examples: [Buffer.alloc(0), Buffer.from("missing"), Buffer.from([0x61, 0, 0x62])],
  decode: (payload) => {
    const name = payload.toString("utf8");
    // Invalid UTF-8 decodes to U+FFFD: compare bytes, so no other name is opened instead.
    if (!Buffer.from(name, "utf8").equals(payload) || !isNbdString(name)) {
      return { name: "", malformed: "export name is not a valid NBD string" };
    }
    return { name };
  },
  transitions: [
    { guard: "extendedHeadersOn", target: "CLOSED", actions: [reason("NBD_OPT_EXPORT_NAME after extended headers")] },
    { target: "EXPORT_NAME" },
  ],
  states: openExportStates,
  ...openExportDeclarations,
  effects: openExportEffects,
};
