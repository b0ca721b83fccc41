#!/usr/bin/env -S node --max-semi-space-size=4 --interrupt-budget=1081344
// The nbdstate command (see src/cli/main.ts). main() resolves when the
// server is done; its value is the exit status.
//
// --max-semi-space-size=4: V8's young generation grows to tens of MiB under
// a burst of requests and never gives it back; capped, a server that served
// a flood of clients returns to its size once they leave (docs/threat-model.md).
// It is faster too: fio 4k random writes at QD32 took 6.7-6.9 µs of server
// CPU per request with 4 (MiB), 9.7-11 with V8's default, 8 or 16; 1 and 2
// were within noise of 4 (measured 2026-12-03, bench machine).
//
// --interrupt-budget=1081344 (16x V8's default): functions are optimized
// by TurboFan only once they have run 16 times as much bytecode. The
// data path is thin (syscalls and memcpy do the work), and with the
// default each nbdcopy run paid 100-130 ms of background TurboFan
// compiling, on cores the client needs too. Measured 2026-12-07 (bench,
// 3 rounds against nbdkit, with the same day's stable data-path arrays): overwrite 0.83 -> 1.03, sequential read
// 0.82 -> 1.03, file read 0.86 -> 1.09, file write 0.75 -> 0.89; 4k random
// read and write at QD32 (10 s, where everything hot is optimized anyway)
// unchanged at 1.25 and 1.11.
import { main } from "../dist/cli/main.js";

const status = await main(process.argv.slice(2));
process.exitCode = status;
// Exit even if a plugin left a handle open, once output has had time to drain.
setTimeout(() => process.exit(status), 2000).unref();
