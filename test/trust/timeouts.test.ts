// The handshake timeout (client flags must arrive in time) and the idle
// option-phase timeout: a silent client is disconnected, and the server
// goes on serving others.
import net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { NbdClient } from "../../src/client/index.js";
import * as C from "../../src/protocol/constants.js";
import { encodeOption } from "../../src/protocol/wire.js";
import { startInProcess, type InProcess } from "../machines/inproc.js";

function connectRaw(path: string): Promise<{ s: net.Socket; closed: Promise<number> }> {
  return new Promise((resolve) => {
    const s = net.connect(path);
    const t0 = Date.now();
    const closed = new Promise<number>((r) => s.on("close", () => r(Date.now() - t0)));
    s.on("error", () => {});
    s.on("data", () => {});
    s.on("connect", () => resolve({ s, closed }));
  });
}

describe("handshake and option-phase timeouts", () => {
  let srv: InProcess | null = null;
  afterEach(async () => {
    await srv?.stop();
    srv = null;
  });

  it("a client that never sends its flags is disconnected after the handshake timeout", async () => {
    srv = await startInProcess({ handshakeTimeoutMs: 300, optionTimeoutMs: 5000 });
    const { closed } = await connectRaw(srv.sock);
    const ms = await closed;
    expect(ms).toBeGreaterThanOrEqual(250);
    expect(ms).toBeLessThan(3000);
    expect(await srv.idle()).toBe(true);
  });

  it("a client idle between options is disconnected; a busy one is not", async () => {
    srv = await startInProcess({ handshakeTimeoutMs: 5000, optionTimeoutMs: 400 });
    const { s, closed } = await connectRaw(srv.sock);
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(C.NBD_FLAG_C_FIXED_NEWSTYLE | C.NBD_FLAG_C_NO_ZEROES);
    s.write(flags);
    // Keep haggling for longer than the timeout, one option every 200 ms.
    for (let i = 0; i < 4; i++) {
      await new Promise((r) => setTimeout(r, 200));
      s.write(encodeOption(C.NBD_OPT_STRUCTURED_REPLY));
    }
    expect(s.destroyed).toBe(false);
    const ms = await closed;
    expect(ms).toBeGreaterThanOrEqual(1000);
    // Meanwhile and afterwards the server serves others normally.
    const c = await NbdClient.open({ path: srv.sock });
    expect(c.size).toBeGreaterThan(0);
    await c.disconnect();
  });

  it("transmission has no idle timeout: a quiet client in transmission stays connected", async () => {
    srv = await startInProcess({ handshakeTimeoutMs: 200, optionTimeoutMs: 200 });
    const c = await NbdClient.open({ path: srv.sock });
    await new Promise((r) => setTimeout(r, 600));
    expect((await c.pread(512, 0)).length).toBe(512);
    await c.disconnect();
  });
});
