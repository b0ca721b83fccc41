// NBD_OPT_GO: open the export and, on NBD_REP_ACK, "the client and the
// server both immediately enter the transmission phase".
import { NBD_OPT_GO } from "../protocol/constants.js";
import { decodeInfoGo, infoGoExamples, openExportDeclarations, openExportEffects, openExportStates } from "./open-export.js";
import type { OptionRecord } from "./record.js";

export const goOption: OptionRecord = {
  option: NBD_OPT_GO,
  event: "NBD_OPT_GO",
  decode: decodeInfoGo,
  examples: infoGoExamples,
  transitions: [{ target: "OPEN_EXPORT_GO" }],
  states: openExportStates,
  ...openExportDeclarations,
  effects: openExportEffects,
};
