#!/usr/bin/env -S node --max-semi-space-size=4
// The nbdstate command (see src/cli/main.ts). main() resolves when the
// server is done; its value is the exit status.
//
// --max-semi-space-size=4: V8's young generation grows to tens of MiB under
// a burst of requests and never gives it back; capped, a server that served
// a flood of clients returns to its size once they leave (docs/threat-model.md).
// It is faster too: fio 4k random writes at QD32 took 6.7-6.9 µs of server
// CPU per request with 4 (MiB), 9.7-11 with V8's default, 8 or 16; 1 and 2
// were within noise of 4 (measured 2026-12-03, bench machine).
import { main } from "../dist/cli/main.js";

const status = await main(process.argv.slice(2));
process.exitCode = status;
// Exit even if a plugin left a handle open, once output has had time to drain.
setTimeout(() => process.exit(status), 2000).unref();
