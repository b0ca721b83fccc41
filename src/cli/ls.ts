// `nbdstate ls URI`: browse a server's export tree one level at a time with
// the experimental NBD_OPT_LIST_HIER (docs/list-hier.md). The URI's export
// name is the path: "" for the top, "disks.tar" or "disks.tar:" for what is
// inside disks.tar. A server without the option (nbdkit, qemu-nbd, nbdstate
// without --experimental-list-hier) answers NBD_REP_ERR_UNSUP; the level is
// then cut from NBD_OPT_LIST's flat listing, the same answer at the cost of
// the whole list on the wire.
//
// Output, one line per entry: an export's name, a directory's name with a
// trailing ':' (a node that is both gets both lines), a tab and the
// description where there is one.

import { NbdClient } from "../client/client.js";
import { NbdOptionError } from "../client/errors.js";
import type { HierEntry } from "../client/options.js";
import { clientTlsFromFiles } from "../client/tls.js";
import { parseNbdUri } from "../client/uri.js";
import { NBD_REP_ERR_UNSUP } from "../protocol/constants.js";
import { HIER_SEPARATOR, hierLevel } from "../protocol/hier.js";
import { CliError } from "./errors.js";

export const LS_USAGE = "usage: nbdstate ls URI   (the URI's export name is the tree path, e.g. nbd+unix:///disks.tar:?socket=SOCK)";

/** The lines `nbdstate ls` prints for a level. */
export function lsLines(entries: readonly HierEntry[]): string[] {
  const out: string[] = [];
  for (const e of entries) {
    const tail = e.description ? `\t${e.description}` : "";
    if (e.isExport) out.push(e.name + tail);
    if (e.isDir) out.push(e.name + HIER_SEPARATOR + (e.isExport ? "" : tail));
  }
  return out;
}

/** Run `nbdstate ls ARGS`; returns the exit status. */
export async function runLs(args: readonly string[], out: (s: string) => void, err: (s: string) => void): Promise<number> {
  if (args.length !== 1 || args[0]!.startsWith("-")) throw new CliError(LS_USAGE);
  let uri;
  try {
    uri = parseNbdUri(args[0]!);
  } catch (e) {
    throw new CliError(`ls: ${(e as Error).message}`);
  }
  const name = uri.exportName;
  const path = name === "" || name.endsWith(HIER_SEPARATOR) ? name : name + HIER_SEPARATOR;
  const tls = uri.tls ? clientTlsFromFiles({ mode: "require", certificates: uri.tlsCertificates, pskFile: uri.tlsPskFile, username: uri.tlsUsername }) : undefined;
  const c = await NbdClient.connect({ ...uri.target, ...(tls ? { tls } : {}), timeout: 30_000 });
  try {
    let entries: HierEntry[];
    try {
      entries = await c.listHier(path);
    } catch (e) {
      if (!(e instanceof NbdOptionError) || e.replyType !== NBD_REP_ERR_UNSUP) throw e;
      err("nbdstate: ls: the server has no NBD_OPT_LIST_HIER; this level is cut from NBD_OPT_LIST");
      const level = hierLevel(await c.list(), path);
      if (level === null) throw new CliError(`ls: no export is under '${path}'`);
      entries = level.map((n) => ({ name: n.name, description: n.description, isExport: n.isExport, isDir: n.isDir }));
    }
    for (const l of lsLines(entries)) out(`${l}\n`);
    return 0;
  } catch (e) {
    if (e instanceof NbdOptionError) throw new CliError(`ls: ${e.message}`);
    throw e;
  } finally {
    await c.abort().catch(() => c.destroy());
  }
}
