// The export tree of the experimental NBD_OPT_LIST_HIER (docs/list-hier.md):
// export names split at ':', the separator the container filters (tar,
// ext2, partition) put between an outer export and what is inside it
// ("disks.tar:vm.img:2"). One level of the tree under PATH ("" for the top,
// else a prefix ending in ':') is every distinct next segment of the names
// that start with PATH: a leaf where a name ends there, a directory where
// longer names go on (a node can be both: vm.img is an export and holds
// partitions). Server and client (its fallback over NBD_OPT_LIST) share it.

export const HIER_SEPARATOR = ":";

export interface HierNode {
  /** The full name: an export name, or a directory prefix ending in ':'. */
  name: string;
  /** The segment below PATH, without the separator. */
  label: string;
  /** An export of that name exists. */
  isExport: boolean;
  /** Names go on below it (a directory: list it with name + ':'). */
  isDir: boolean;
  /** The export's description, if it is one. */
  description: string;
}

/** Whether PATH is a valid tree path: "" or a prefix ending in the separator. */
export function validHierPath(path: string): boolean {
  return path === "" || path.endsWith(HIER_SEPARATOR);
}

/**
 * The nodes of one level under PATH, in the order their first name came.
 * null if PATH names nothing (no export starts with it), except for "".
 */
export function hierLevel(entries: ReadonlyArray<{ name: string; description?: string }>, path: string): HierNode[] | null {
  const nodes = new Map<string, HierNode>();
  let any = false;
  for (const e of entries) {
    if (!e.name.startsWith(path)) continue;
    // rest may be "": the default export "" at the top, an export with a name ending in ':' below.
    const rest = e.name.slice(path.length);
    any = true;
    const cut = rest.indexOf(HIER_SEPARATOR);
    const label = cut < 0 ? rest : rest.slice(0, cut);
    const name = path + label;
    let n = nodes.get(label);
    if (!n) {
      n = { name, label, isExport: false, isDir: false, description: "" };
      nodes.set(label, n);
    }
    if (cut < 0) {
      n.isExport = true;
      n.description = e.description ?? "";
    } else n.isDir = true;
  }
  if (!any && path !== "") return null;
  return [...nodes.values()];
}
