// tar filter: serve one member of an uncompressed tar archive (the layer
// below) as a disk, reading and writing it in place. tar-entry=PATH serves
// PATH (as `tar tf` prints it); tar-entry=exportname makes every regular
// file of the archive an export named by its path (OUTER:PATH when the
// layer below lists several exports). The headers are read by
// ./parse.ts through a shared context of the layer below; no tar program
// runs.

import { NbdError, type Context, type Filter, type LowerBackend } from "../../backend/types.js";
import { NBD_EINVAL } from "../../protocol/constants.js";
import { InnerExports, type InnerSource } from "../kit/inner-exports.js";
import { checkWindow, windowOps, type WindowHandle } from "../kit/window.js";
import { scanTar, TarError, type Member, type TarIndex } from "./parse.js";

interface TarHandle extends WindowHandle {
  member: string;
  /** Description in exportname mode (the member's size). */
  description: string | null;
}

/** Default tar-limit: headers read at most per archive. */
export const DEFAULT_TAR_LIMIT = 1_000_000;

function describe(m: Member): string {
  return `${m.size} bytes`;
}

export default function createFilter(): Filter<TarHandle> {
  let entry: string | undefined;
  let limit = DEFAULT_TAR_LIMIT;
  let lowerSeen: LowerBackend | null = null;

  const source: InnerSource<TarIndex> = {
    name: "tar",
    async scan(ctx) {
      try {
        return await scanTar(ctx, limit);
      } catch (err) {
        if (err instanceof TarError) throw new NbdError(NBD_EINVAL, `tar: ${err.message}`);
        throw err;
      }
    },
    items(idx) {
      const out = [];
      for (const m of idx.members.values()) if (!m.sparse) out.push({ name: m.name, description: describe(m) });
      return out;
    },
    has(idx, inner) {
      return idx.members.has(inner);
    },
  };
  const inner = new InnerExports(source);

  /** The member `name` of an archive, or a clear error. */
  function find(idx: TarIndex, name: string, where: string): Member {
    const m = idx.members.get(name);
    if (m?.sparse) throw new NbdError(NBD_EINVAL, `tar: ${where}: '${name.slice(0, 256)}' is a sparse member, which this filter does not serve`);
    if (m) return m;
    const why = idx.refused.get(name);
    if (why) throw new NbdError(NBD_EINVAL, `tar: ${where}: '${name.slice(0, 256)}' is not served: ${why}`);
    const more = idx.limited ? ` (only the first ${limit} headers were read: see tar-limit)` : "";
    throw new NbdError(NBD_EINVAL, `tar: ${where}: no regular file '${name.slice(0, 256)}' in the archive${more}`);
  }

  return {
    name: "tar",
    version: "1.0.0",
    longname: "nbdstate tar filter",
    description: "Read and write files inside tar archives without unpacking.",
    configHelp:
      "tar-entry=<PATH>       The path inside the tar archive to serve (as tar tf prints it).\n" +
      "tar-entry=exportname   Serve every regular file as an export named by its path.\n" +
      `tar-limit=<N>          Read at most N headers per archive (default ${DEFAULT_TAR_LIMIT}, 0: no limit).`,

    config(next, key, value) {
      switch (key) {
        case "tar-entry":
          if (value === "") throw new Error("tar: tar-entry must not be empty");
          entry = value;
          return;
        case "tar-limit": {
          if (!/^[0-9]+$/.test(value) || !Number.isSafeInteger(Number(value))) {
            throw new Error(`tar: tar-limit: not a number of headers: ${value}`);
          }
          limit = Number(value);
          return;
        }
        case "tar":
          // nbdkit's tar=PROGRAM (GNU tar to run): nothing is run here.
          return;
        default:
          return next(key, value);
      }
    },

    configComplete(next) {
      if (entry === undefined) throw new Error("tar: tar-entry parameter is required");
      return next();
    },

    afterFork(lower) {
      lowerSeen = lower;
    },

    async cleanup() {
      await inner.close(lowerSeen);
    },

    async listExports(lower, p) {
      if (entry !== "exportname") return lower.listExports(p);
      return inner.list(lower, p);
    },

    async defaultExport(lower, p) {
      // In exportname mode there is no default member.
      return entry === "exportname" ? null : lower.defaultExport(p);
    },

    async open(a) {
      const p = { readonly: a.readonly, tls: a.tls };
      let outer: string;
      let m: Member;
      if (entry === "exportname") {
        if (a.exportName === "") throw new NbdError(NBD_EINVAL, "tar: tar-entry=exportname: the client must name a member");
        const r = await inner.resolve(a.lower, p, a.exportName);
        outer = r.outer;
        m = find(r.index, r.inner, `export '${a.exportName.slice(0, 256)}'`);
        await a.next(a.readonly, outer);
        return { start: m.dataOffset, size: m.size, member: m.name, description: describe(m) };
      }
      outer = await inner.canonical(a.lower, p, a.exportName);
      m = find(await inner.index(a.lower, outer, p), entry!, "tar-entry");
      await a.next(a.readonly, a.exportName);
      return { start: m.dataOffset, size: m.size, member: m.name, description: null };
    },

    async prepare(next, h) {
      await checkWindow(next, h, `tar: member '${h.member.slice(0, 256)}'`);
    },

    async exportDescription(next: Context, h) {
      return h.description ?? next.exportDescription();
    },

    ...windowOps<TarHandle>(),
  };
}
