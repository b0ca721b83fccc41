// 16 client processes at once (python3-libnbd), each writing and reading
// back its own region while the others do the same, all succeeding; then
// one reader checks that no region was disturbed by another. Also a burst
// of 16 short-lived connections (nbdinfo) and 4 concurrent nbdcopy copies.
import { createHash, randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";
import { makeTmpDir, removeTmpDir, runOk, startServer, SERVER_NAME, type RunningServer } from "../helpers/server.js";
import { pythonOk } from "../helpers/python.js";

const ok = requirePythonLibnbd() && requireTools([TOOLS.nbdinfo, TOOLS.nbdcopy]);
const MiB = 1 << 20;
const CLIENTS = 16;

describe.skipIf(!ok)(`${CLIENTS} concurrent clients against ${SERVER_NAME}`, () => {
  let srv: RunningServer;
  beforeAll(async () => {
    srv = await startServer(["memory", `size=${CLIENTS * 2}M`]);
  });
  afterAll(async () => {
    await srv?.stop();
  });

  it(`${CLIENTS} python3-libnbd processes, each writing and verifying its own 2 MiB region`, async () => {
    // Each client: several rounds of write / read-back in its region, with
    // requests in flight, and a flush; seeded so the final check can
    // recompute the expected content.
    const script = `
import random, time
i = int(EXTRA[0])
M = 1024 * 1024
base = i * 2 * M
h = connect()
# all 16 connect first, then start together
time.sleep(max(0, float(EXTRA[1]) - time.time()))
rnd = random.Random(i)
final = bytearray(2 * M)
for rnd_no in range(8):
    chunk = bytes([(i * 16 + rnd_no) & 0xff]) * 65536
    offs = [base + k * 65536 for k in range(32)]
    cookies = [h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(chunk)), o) for o in offs]
    wait_all(h, cookies)
    for o in offs:
        final[o - base:o - base + 65536] = chunk
    for o in rnd.sample(offs, 8):
        eq(h.pread(65536, o), chunk, "client %d round %d at %d" % (i, rnd_no, o))
h.flush()
eq(h.pread(2 * M, base) == bytes(final), True, "client %d whole region" % i)
h.shutdown()
print("OK")
`;
    const startAt = String(Date.now() / 1000 + 2.5);
    const results = await Promise.allSettled(
      Array.from({ length: CLIENTS }, (_, i) => pythonOk(script, srv.uri, [String(i), startAt], 60_000)),
    );
    const failures = results
      .map((r, i) => (r.status === "rejected" ? `client ${i}: ${(r.reason as Error).message}` : null))
      .filter(Boolean);
    expect(failures).toEqual([]);
    expect(srv.exited).toBe(false);

    // One reader afterwards: every region holds its client's last round.
    await pythonOk(
      `
h = connect()
M = 1024 * 1024
for i in range(${CLIENTS}):
    eq(h.pread(2 * M, i * 2 * M) == bytes([(i * 16 + 7) & 0xff]) * (2 * M), True, "region %d" % i)
h.shutdown()
print("OK")
`,
      srv.uri,
    );
  });

  it(`${CLIENTS} nbdinfo processes at once all get the export`, async () => {
    const rs = await Promise.all(Array.from({ length: CLIENTS }, () => runOk("nbdinfo", ["--size", srv.uri])));
    for (const r of rs) expect(r.stdout.trim()).toBe(String(CLIENTS * 2 * MiB));
  });

  it("4 nbdcopy processes copying into 4 servers at once all land intact", async () => {
    const dir = makeTmpDir("concurrent-copy-");
    const servers: RunningServer[] = [];
    try {
      const files = Array.from({ length: 4 }, (_, i) => {
        const data = randomBytes(8 * MiB);
        const p = join(dir, `src${i}.img`);
        writeFileSync(p, data);
        return { p, hash: createHash("sha256").update(data).digest("hex") };
      });
      for (let i = 0; i < 4; i++) servers.push(await startServer(["memory", "size=8M"]));
      await Promise.all(files.map((f, i) => runOk("nbdcopy", [f.p, servers[i]!.uri])));
      const outs = await Promise.all(servers.map((s) => runOk("nbdcopy", [s.uri, "-"])));
      outs.forEach((o, i) => expect(createHash("sha256").update(o.stdoutBuf).digest("hex")).toBe(files[i]!.hash));
    } finally {
      await Promise.all(servers.map((s) => s.stop()));
      removeTmpDir(dir);
    }
  });
});
