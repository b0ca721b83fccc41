// Hostile input: seeded random and mutated handshake, option and request
// streams over raw sockets. The server must not crash (an uncaught
// exception or unhandled rejection ends the process), must not leak file
// descriptors or connections, and must keep answering a well-behaved
// client throughout. Longer runs: FUZZ_CASES=20000 FUZZ_SEED=7 npx vitest run test/trust/fuzz.test.ts
import { execFileSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NbdClient } from "../../src/client/index.js";
import { makeTmpDir, removeTmpDir, startServer, waitFor, type RunningServer } from "../helpers/server.js";
import { fuzzCase, rng, runCase } from "./fuzzer.js";

const CASES = Number(process.env.FUZZ_CASES ?? 400);
const SEED = Number(process.env.FUZZ_SEED ?? 20261128);
const KEEP = 1536 * 1024;
const fdCount = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;

describe("fuzzing the server over raw sockets", () => {
  let server: RunningServer;
  let dir: string | undefined;
  beforeAll(async () => {
    // Fuzz writes land below 1 MiB (or out of range); the keeper owns 1.5 MiB.
    // TLS on (PSK), so STARTTLS cases reach a real upgrade; short timeouts so stalls end within the run.
    dir = makeTmpDir("nbdstate-fuzz-");
    const keys = join(dir, "keys.psk");
    execFileSync("psktool", ["-u", "alice", "-p", keys], { stdio: "ignore" });
    server = await startServer(["--tls=on", `--tls-psk=${keys}`, "--timeout=3", "memory", "2M"]);
  });
  afterAll(async () => {
    await server?.stop();
    if (dir) removeTmpDir(dir);
  });

  it(`${CASES} seeded cases (seed ${SEED}): no crash, no leaked descriptors, a good client served throughout`, async () => {
    const keeper = await NbdClient.open({ path: server.sock });
    await keeper.pwrite(Buffer.alloc(4096, 0x11), KEEP);
    // One connection per thread first (they go round the threads, src/threads):
    // libuv opens /dev/null once per event loop, at its first socket.
    for (let i = 0; i < 4; i++) await (await NbdClient.open({ path: server.sock })).disconnect();
    const baseline = fdCount(server.pid);
    const r = rng(SEED);
    for (let i = 0; i < CASES; i += 8) {
      await Promise.all(Array.from({ length: 8 }, () => runCase(server.sock, fuzzCase(r), r)));
      expect(server.exited, `server exited at case ${i}: ${server.stderr}`).toBe(false);
      if (i % 80 === 0) {
        // The keeper connection and a new one both still work.
        expect((await keeper.pread(4096, KEEP)).every((b) => b === 0x11)).toBe(true);
        const fresh = await NbdClient.open({ path: server.sock });
        expect(fresh.size).toBe(2 * 1024 * 1024);
        await fresh.disconnect();
      }
    }
    expect((await keeper.pread(4096, KEEP)).every((b) => b === 0x11)).toBe(true);
    // Every fuzz connection is gone: descriptors return to the baseline.
    // (Stalled options are cut by the 3 s option timeout.)
    const settled = await waitFor(() => fdCount(server.pid) <= baseline, 10_000, 100);
    expect(settled, `fds: ${fdCount(server.pid)} > baseline ${baseline}`).toBe(true);
    await keeper.disconnect();
  }, 300_000);
});
