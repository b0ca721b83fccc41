// NBD_OPT_INFO: what NBD_OPT_GO would say, without entering transmission.
// nbdinfo --list sends one per listed export (the budget allows for that).
import { NBD_OPT_INFO } from "../protocol/constants.js";
import { decodeInfoGo, infoGoExamples, openExportDeclarations, openExportEffects, openExportStates } from "./open-export.js";
import type { OptionRecord } from "./record.js";

export const infoOption: OptionRecord = {
  option: NBD_OPT_INFO,
  event: "NBD_OPT_INFO",
  decode: decodeInfoGo,
  examples: infoGoExamples,
  transitions: [{ target: "OPEN_EXPORT_INFO" }],
  states: openExportStates,
  ...openExportDeclarations,
  effects: openExportEffects,
};
