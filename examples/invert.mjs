// The invert example filter (see invert.ts) in plain JavaScript.
//
//   nbdstate -f -U /tmp/s.sock --filter=./examples/invert.mjs memory 16M
import { FLAG_FUA } from "nbdstate";

/** @param {Buffer} buf */
function invert(buf) {
  for (let i = 0; i < buf.length; i++) buf[i] = buf[i] ^ 0xff;
}

/** @type {import("nbdstate").Filter} */
const filter = {
  name: "invert",
  version: "1.0.0",
  description: "Invert every bit of the data.",

  async pread(next, _h, buf, offset, flags) {
    await next.pread(buf, offset, flags);
    invert(buf);
  },
  async pwrite(next, _h, buf, offset, flags) {
    const out = Buffer.from(buf);
    invert(out);
    await next.pwrite(out, offset, flags);
  },
  canZero: () => true,
  canFastZero: () => false,
  async zero(next, _h, count, offset, flags) {
    await next.pwrite(Buffer.alloc(count, 0xff), offset, flags & FLAG_FUA);
  },
  canExtents: () => false,
  canTrim: () => false,
};
export default filter;
