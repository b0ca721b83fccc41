// The server chooses the TLS suite by its own order (as GnuTLS, nbdkit's
// library, does by default): a client listing ChaCha20 first still gets
// AES-GCM, which runs on the CPU's AES instructions. libnbd's GnuTLS put
// ChaCha20 first and halved TLS throughput (docs: README Performance).
import net from "node:net";
import tls from "node:tls";
import { describe, expect, it } from "vitest";
import { tlsServer, upgradeToTls } from "../../src/actors/tls.js";

const KEY = Buffer.from("0123456789abcdef0123456789abcdef", "hex");

async function negotiated(clientCiphers: string): Promise<string> {
  const server = tlsServer({ kind: "psk", file: "(test)", keys: new Map([["alice", KEY]]) });
  const listener = net.createServer();
  await new Promise<void>((r) => listener.listen(0, "127.0.0.1", r));
  const port = (listener.address() as net.AddressInfo).port;
  const accepted = new Promise<net.Socket>((r) => listener.once("connection", r));
  const raw = net.connect(port, "127.0.0.1");
  const serverRaw = await accepted;
  const up = upgradeToTls(serverRaw, server);
  const client = tls.connect({
    socket: raw,
    ciphers: clientCiphers,
    minVersion: "TLSv1.3",
    checkServerIdentity: () => undefined,
    pskCallback: () => ({ identity: "alice", psk: KEY }),
  });
  try {
    await Promise.all([up.secure, new Promise<void>((r, j) => client.once("secureConnect", r).once("error", j))]);
    return client.getCipher().name;
  } finally {
    client.destroy();
    up.socket.destroy();
    listener.close();
  }
}

describe("TLS suite choice", () => {
  it("a client preferring ChaCha20 gets AES-GCM: the server's order decides", async () => {
    expect(await negotiated("TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384")).toBe("TLS_AES_128_GCM_SHA256");
  });

  it("a client offering only ChaCha20 still gets it", async () => {
    expect(await negotiated("TLS_CHACHA20_POLY1305_SHA256")).toBe("TLS_CHACHA20_POLY1305_SHA256");
  });
});
