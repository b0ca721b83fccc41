// qcow2dec filter: serve a qcow2 image (the layer below) as the raw disk
// it holds, read-only, as nbdkit 1.42's qcow2dec filter. Standard, zero,
// unallocated and compressed (zlib or zstd) clusters; versions 2 and 3;
// any cluster size qemu-img accepts (512 bytes .. 2 MiB). Block status comes
// from the cluster map: unallocated and zero clusters are holes that read
// as zeros. Images with a backing file, encryption, an external data file
// or extended L2 entries are refused with a clear error.

import type { Filter } from "../../backend/types.js";
import { decodeFilter, type DecodeHandle } from "../kit/decode/filter.js";
import { readHeader } from "./header.js";
import { Qcow2Image } from "./image.js";

export default function createFilter(): Filter<DecodeHandle> {
  return decodeFilter({
    name: "qcow2dec",
    description: "Serve a qcow2 image as raw (read-only).",
    configHelp: "(no parameters)",
    async openImage(src) {
      return Qcow2Image.open(src, await readHeader(src));
    },
  });
}
