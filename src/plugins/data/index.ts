// data plugin: a writable sparse RAM disk whose initial contents come from
// the command line: data='...' (the format of nbdkit-data-plugin(1), see
// parse.ts), raw='...' or base64='...'.

import { FLAG_REQ_ONE } from "../../backend/types.js";
import type { Plugin, ExportEntry, Extent } from "../../backend/types.js";
import { parseBool, parseSize } from "../../backend/size.js";
import { SparseArray } from "../memory/sparse.js";
import { decodeBase64 } from "../kit/base64.js";
import { evaluateData } from "./evaluate.js";
import { Image, readSparse, zeroRange } from "./image.js";
import { DataFormatError, parseData } from "./parse.js";

export interface DataPlugin extends Plugin<true> {
  /** The disk (exposed for tests and diagnostics). */
  readonly disk: SparseArray;
}

/** allocator=sparse|malloc[,mlock=BOOL]|zstd, as nbdkit: all are served by one sparse page map here. */
function checkAllocator(value: string): void {
  const [type, ...opts] = value.split(",");
  if (type !== "sparse" && type !== "malloc" && type !== "zstd") throw new Error(`unknown allocator "${value}"`);
  for (const o of opts) {
    const eq = o.indexOf("=");
    const k = eq < 0 ? o : o.slice(0, eq);
    if (type !== "malloc" || k !== "mlock") throw new Error(`allocator=${type}: unknown parameter '${o}'`);
    if (parseBool(eq < 0 ? "" : o.slice(eq + 1))) {
      throw new Error("allocator=malloc,mlock=true: locking memory is not supported (mlock=no in --dump-plugin)");
    }
  }
}

export default function createPlugin(): DataPlugin {
  let source: { kind: "data" | "raw" | "base64"; value: string } | undefined;
  let sizeParam: number | undefined;
  /** Extra key=value parameters: the $VARs of data='...' (first one wins, as nbdkit). */
  const vars = new Map<string, string>();
  const state = { disk: new SparseArray(), size: 0 };

  return {
    name: "data",
    version: "1.0.0",
    longname: "nbdstate data plugin",
    description: "A writable sparse RAM disk whose initial contents are given on the command line.",
    magicConfigKey: "data",
    configHelp:
      "[data=]<DATA>        Disk contents in the data format (see the manual).\n" +
      "raw=<BINARY>         Disk contents given directly.\n" +
      "base64=<BASE64>      Disk contents encoded in base64.\n" +
      "size=<SIZE>          Truncate or extend the disk to this size.\n" +
      "allocator=sparse|malloc|zstd  Accepted as nbdkit's (pages are sparse).\n" +
      "VAR=<DATA>           A $VAR for the data format.",
    get disk() {
      return state.disk;
    },

    config(key, value) {
      switch (key) {
        case "data":
        case "raw":
        case "base64":
          if (source) throw new Error("data: raw|base64|data parameter must be specified exactly once");
          source = { kind: key, value };
          return;
        case "size":
          try {
            sizeParam = parseSize(value);
          } catch (e) {
            throw new Error(`data: size: ${(e as Error).message}`);
          }
          return;
        case "allocator":
          try {
            checkAllocator(value);
          } catch (e) {
            throw new Error(`data: ${(e as Error).message}`);
          }
          return;
        default:
          if (!vars.has(key)) vars.set(key, value);
      }
    },

    configComplete() {
      if (!source) throw new Error("data: raw|base64|data parameter was not specified");
      if (source.kind !== "data" && vars.size > 0) {
        throw new Error(`data: unknown parameter '${[...vars.keys()][0]}' (extra parameters are $VARs of data='...')`);
      }
    },

    async getReady() {
      const src = source!;
      let img: Image;
      try {
        if (src.kind === "data") {
          const root = parseData(src.value, (name) => vars.get(name) ?? process.env[name]);
          img = await evaluateData(root);
        } else {
          const bytes = src.kind === "raw" ? Buffer.from(src.value, "utf8") : decodeBase64(src.value);
          img = new Image();
          img.write(bytes, 0);
          img.size = bytes.length;
        }
      } catch (e) {
        if (e instanceof DataFormatError) throw new Error(`data: ${e.message}`);
        throw e instanceof Error && !e.message.startsWith("data: ") ? new Error(`data: ${e.message}`) : e;
      }
      const size = sizeParam ?? img.size;
      // Bytes beyond a smaller size= can never be read: free them.
      if (img.size > size) zeroRange(img.arr, img.size - size, size);
      state.disk = img.arr;
      state.size = size;
    },

    dumpPlugin() {
      return "data_base64=yes\nmlock=no\n";
    },

    unload() {
      state.disk.clear();
    },

    listExports: (): ExportEntry[] => [{ name: "" }],
    defaultExport: () => "",
    open: () => true,

    getSize: () => state.size,
    canWrite: () => true,
    canFlush: () => true,
    isRotational: () => false,
    canTrim: () => true,
    canZero: () => true,
    canFastZero: () => true,
    canFua: () => "native",
    canMultiConn: () => true,
    canExtents: () => true,
    canCache: () => "native",

    pread(_h, buf, offset) {
      state.disk.read(buf, offset);
    },
    preadSparse(_h, buf, offset) {
      return readSparse(state.disk, buf, offset);
    },
    pwrite(_h, buf, offset) {
      state.disk.write(buf, offset);
    },
    flush() {},
    trim(_h, count, offset) {
      zeroRange(state.disk, count, offset);
    },
    zero(_h, count, offset) {
      zeroRange(state.disk, count, offset);
    },
    extents(_h, count, offset, flags): Extent[] {
      return state.disk.extents(count, offset, (flags & FLAG_REQ_ONE) !== 0);
    },
    cache() {},
  };
}
