import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Interop suites spawn servers and real clients (nbdinfo, nbdcopy,
    // qemu-img, python3-libnbd); give them room on a 2-core machine.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    teardownTimeout: 30_000,
    // Child processes and sockets: run each file in its own forked process.
    pool: "forks",
  },
});
