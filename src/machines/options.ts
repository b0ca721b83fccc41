// Option haggling (doc/proto.md, "Option haggling"): one event per option
// the client sends, named as the spec names it. The machine is assembled
// from one record per option (src/options/): each holds its payload
// decoder, its transitions and guards, the states it adds and its effects.
// The rules every option meets first (budget, TLS required, malformed
// payloads) are written once, in src/options/assemble.ts.
import { assembleOptionsMachine, builtinOptions } from "../options/index.js";

export const optionsMachine = assembleOptionsMachine(builtinOptions);

export type { OptionsContext, OptionsInput, OptionsOutput, RepError, TlsMode } from "../options/record.js";
