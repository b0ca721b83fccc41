// An example filter: every byte read or written is inverted (x ^ 0xff), so
// the layer below holds the complement of what clients see.
//
//   nbdstate -f -U /tmp/s.sock --filter=./examples/invert.ts memory 16M
//
// A filter gets `next`, the context of the layer below, as each data
// callback's first argument. Callbacks it leaves out pass straight through
// (here: getSize, flush, trim, extents...): only define what you change.
import { defineFilter, FLAG_FUA } from "nbdstate";

function invert(buf: Buffer): void {
  for (let i = 0; i < buf.length; i++) buf[i] = buf[i]! ^ 0xff;
}

export default defineFilter({
  name: "invert",
  version: "1.0.0",
  description: "Invert every bit of the data.",

  async pread(next, _h, buf, offset, flags) {
    await next.pread(buf, offset, flags);
    invert(buf);
  },
  async pwrite(next, _h, buf, offset, flags) {
    const out = Buffer.from(buf); // the client's buffer is not ours to change
    invert(out);
    await next.pwrite(out, offset, flags);
  },
  // Zeroes below would read as 0xff here: write the inverted zeroes instead.
  canZero: () => true,
  canFastZero: () => false,
  async zero(next, _h, count, offset, flags) {
    const ones = Buffer.alloc(count, 0xff);
    await next.pwrite(ones, offset, flags & FLAG_FUA); // a write takes FUA only
  },
  // A hole below reads as zeros, which this filter turns into 0xff: no
  // extents (they would claim zeros) and no trim (it may leave zeros).
  // Sparse reads need nothing: a filter with pread serves plain data.
  canExtents: () => false,
  canTrim: () => false,
});
