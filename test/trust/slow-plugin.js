// A test plugin whose reads take 400 ms, so requests are surely in flight
// when the test signals the server. Reads return the byte 0x5a.
export default {
  name: "slow",
  config() {},
  open: () => ({}),
  getSize: () => 1024 * 1024,
  pread: (_h, buf) => new Promise((resolve) => setTimeout(() => (buf.fill(0x5a), resolve()), 400)),
};
