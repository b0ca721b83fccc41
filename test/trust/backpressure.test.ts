// A client that sends requests but never reads the replies cannot make the
// server queue replies without bound: reading pauses once too many replies
// wait in the socket, and the server's memory stays flat.
import net from "node:net";
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NbdClient } from "../../src/client/index.js";
import * as C from "../../src/protocol/constants.js";
import { encodeInfoRequest, encodeOption, encodeRequest } from "../../src/protocol/wire.js";
import { startServer, type RunningServer } from "../helpers/server.js";

/** Negotiate NBD_OPT_GO by hand on a plain socket, then stop reading from it. */
async function goThenStopReading(path: string): Promise<net.Socket> {
  const s = net.connect(path);
  let buf = Buffer.alloc(0);
  const need = (n: number) =>
    new Promise<Buffer>((resolve) => {
      const check = () => {
        if (buf.length < n) return;
        s.off("data", onData);
        const out = buf.subarray(0, n);
        buf = buf.subarray(n);
        resolve(out);
      };
      const onData = (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        check();
      };
      s.on("data", onData);
      check();
    });
  await need(18); // NBDMAGIC, IHAVEOPT, handshake flags
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(C.NBD_FLAG_C_FIXED_NEWSTYLE | C.NBD_FLAG_C_NO_ZEROES);
  s.write(flags);
  s.write(encodeOption(C.NBD_OPT_GO, encodeInfoRequest("", [])));
  for (;;) {
    const head = await need(20);
    await need(head.readUInt32BE(16));
    if (head.readUInt32BE(12) === C.NBD_REP_ACK) break;
  }
  s.pause();
  return s;
}

const rssMiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) / 1024;

describe("replies a client does not read", () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await startServer(["memory", "64M"]);
  });
  afterAll(async () => {
    await server?.stop();
  });

  it("512 reads of 1 MiB never read back: the server's memory stays bounded, others are served", async () => {
    // Touch the disk once so its pages exist before the baseline.
    const c = await NbdClient.open({ path: server.sock });
    await c.pwrite(Buffer.alloc(8 * 1024 * 1024, 1), 0);
    const before = rssMiB(server.pid);
    const raw = await goThenStopReading(server.sock);
    // 512 MiB of replies asked for; the socket buffers only a little of it.
    for (let i = 0; i < 512; i++) raw.write(encodeRequest(0, C.NBD_CMD_READ, BigInt(i), (i % 8) * 1024 * 1024, 1024 * 1024));
    await new Promise((r) => setTimeout(r, 1500));
    const grown = rssMiB(server.pid) - before;
    expect(grown, `server RSS grew by ${grown.toFixed(0)} MiB`).toBeLessThan(128);
    // The stuck client does not stop anyone else.
    expect((await c.pread(4096, 0)).every((b) => b === 1)).toBe(true);
    raw.destroy();
    await c.disconnect();
  });
});
