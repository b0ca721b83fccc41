// The option records nbdstate serves, in the spec's order. The options
// machine (src/machines/options.ts) is assembled from this list.
import { abortOption } from "./abort.js";
import { exportNameOption } from "./export-name.js";
import { extendedHeadersOption } from "./extended-headers.js";
import { goOption } from "./go.js";
import { infoOption } from "./info.js";
import { listOption } from "./list.js";
import { listMetaContextOption, setMetaContextOption } from "./meta-context.js";
import type { OptionRecord } from "./record.js";
import { starttlsOption } from "./starttls.js";
import { structuredReplyOption } from "./structured-reply.js";

export const builtinOptions: readonly OptionRecord[] = [
  exportNameOption,
  abortOption,
  listOption,
  starttlsOption,
  infoOption,
  goOption,
  structuredReplyOption,
  listMetaContextOption,
  setMetaContextOption,
  extendedHeadersOption,
];

export { assembleOptionsMachine, optionEffects, optionEvent } from "./assemble.js";
export type * from "./record.js";
