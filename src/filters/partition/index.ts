// partition filter: serve one partition of a partitioned disk (the layer
// below) as a whole disk. partition=N serves partition N (MBR primary 1-4,
// logical 5+, or GPT entry N); partition=exportname makes every partition
// an export named "1", "2", ... (OUTER:N when the layer below lists several
// exports), described by its type and size. The table is read by
// ./table.ts through a shared context of the layer below.

import { NbdError, type Context, type Filter, type LowerBackend } from "../../backend/types.js";
import { NBD_EINVAL } from "../../protocol/constants.js";
import { InnerExports, type InnerSource } from "../kit/inner-exports.js";
import { checkWindow, windowOps, type WindowHandle } from "../kit/window.js";
import { PartitionError, readTable, type Partition, type PartitionTable } from "./table.js";

interface PartitionHandle extends WindowHandle {
  number: number;
  description: string | null;
}

export default function createFilter(): Filter<PartitionHandle> {
  /** The partition number, or "exportname". */
  let partition: number | "exportname" | undefined;
  let lowerSeen: LowerBackend | null = null;

  const source: InnerSource<PartitionTable> = {
    name: "partition",
    async scan(ctx) {
      try {
        return await readTable(ctx);
      } catch (err) {
        if (err instanceof PartitionError) throw new NbdError(NBD_EINVAL, `partition: ${err.message}`);
        throw err;
      }
    },
    items(t) {
      return t.partitions.filter((p) => !p.problem).map((p) => ({ name: String(p.number), description: p.description }));
    },
    has(t, inner) {
      return t.partitions.some((p) => String(p.number) === inner);
    },
  };
  const inner = new InnerExports(source);

  function find(t: PartitionTable, n: string, where: string): Partition {
    const p = t.partitions.find((q) => String(q.number) === n);
    if (!p) {
      const have = t.partitions.filter((q) => !q.problem).map((q) => q.number).join(", ") || "none";
      throw new NbdError(NBD_EINVAL, `partition: ${where}: no partition ${n.slice(0, 64)} in the ${t.scheme.toUpperCase()} table (partitions: ${have})`);
    }
    if (p.problem) throw new NbdError(NBD_EINVAL, `partition: ${where}: ${p.problem}`);
    return p;
  }

  return {
    name: "partition",
    version: "1.0.0",
    longname: "nbdstate partition filter",
    description: "Serve a single partition of a partitioned disk.",
    configHelp:
      "partition=<PART>       The partition number to serve, counting from 1.\n" +
      "partition=exportname   Serve every partition as an export named by its number.",

    config(next, key, value) {
      if (key !== "partition") return next(key, value);
      if (value === "exportname") partition = "exportname";
      else if (/^[0-9]+$/.test(value) && Number(value) >= 1 && Number(value) <= 1 << 20) partition = Number(value);
      else throw new Error(`partition: partition must be a number from 1, or exportname, not '${value}'`);
    },

    configComplete(next) {
      if (partition === undefined) throw new Error("partition: partition parameter is required");
      return next();
    },

    afterFork(lower) {
      lowerSeen = lower;
    },

    async cleanup() {
      await inner.close(lowerSeen);
    },

    listExports(lower, p) {
      return partition === "exportname" ? inner.list(lower, p) : lower.listExports(p);
    },

    defaultExport(lower, p) {
      return partition === "exportname" ? null : lower.defaultExport(p);
    },

    async open(a) {
      const p = { readonly: a.readonly, tls: a.tls };
      if (partition === "exportname") {
        if (a.exportName === "") throw new NbdError(NBD_EINVAL, "partition: partition=exportname: the client must name a partition");
        const r = await inner.resolve(a.lower, p, a.exportName);
        const part = find(r.index, r.inner, `export '${a.exportName.slice(0, 256)}'`);
        await a.next(a.readonly, r.outer);
        return { start: part.start, size: part.size, number: part.number, description: part.description };
      }
      const outer = await inner.canonical(a.lower, p, a.exportName);
      const part = find(await inner.index(a.lower, outer, p), String(partition), `partition=${partition}`);
      await a.next(a.readonly, a.exportName);
      return { start: part.start, size: part.size, number: part.number, description: null };
    },

    async prepare(next, h) {
      await checkWindow(next, h, `partition: partition ${h.number}`);
    },

    async exportDescription(next: Context, h) {
      return h.description ?? next.exportDescription();
    },

    ...windowOps<PartitionHandle>(),
  };
}
