#!/usr/bin/env node
// The nbdstate command (see src/cli/main.ts). main() resolves when the
// server is done; its value is the exit status.
import { main } from "../dist/cli/main.js";

const status = await main(process.argv.slice(2));
process.exitCode = status;
// Exit even if a plugin left a handle open, once output has had time to drain.
setTimeout(() => process.exit(status), 2000).unref();
