// Handshake and option haggling against nbdkit.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { NbdClient, openClient, NbdOptionError } from "../../src/client/index.js";
import * as C from "../../src/protocol/constants.js";
import { encodeOption } from "../../src/protocol/wire.js";
import { requireNbdkit, startNbdkit, type Nbdkit } from "./nbdkit.js";

const skip = requireNbdkit();

async function withServer<T>(args: string[], fn: (k: Nbdkit) => Promise<T>): Promise<T> {
  const k = await startNbdkit(args);
  try {
    return await fn(k);
  } finally {
    await k.stop();
  }
}

describe.skipIf(skip)("handshake (nbdkit)", () => {
  it("fixed newstyle with NO_ZEROES, then go", () =>
    withServer(["memory", "1M"], async (k) => {
      const c = await NbdClient.connect({ path: k.sock });
      expect(c.handshakeFlags).toBe(C.NBD_FLAG_FIXED_NEWSTYLE | C.NBD_FLAG_NO_ZEROES);
      expect(c.clientFlags).toBe(C.NBD_FLAG_C_FIXED_NEWSTYLE | C.NBD_FLAG_C_NO_ZEROES);
      expect(c.phase).toBe("options");
      const info = await c.go("");
      expect(info.size).toBe(1 << 20);
      expect(info.transmissionFlags & C.NBD_FLAG_HAS_FLAGS).toBeTruthy();
      expect(c.phase).toBe("transmission");
      await c.disconnect();
      expect(c.phase).toBe("closed");
    }));

  it("NBD_OPT_EXPORT_NAME with and without the 124 zero bytes", () =>
    withServer(["memory", "1M"], async (k) => {
      for (const noZeroes of [true, false]) {
        const c = await NbdClient.connect({ path: k.sock, noZeroes });
        expect(!!(c.clientFlags & C.NBD_FLAG_C_NO_ZEROES)).toBe(noZeroes);
        const info = await c.exportName("");
        expect(info.size).toBe(1 << 20);
        await c.pwrite(Buffer.from("abc"), 0);
        expect((await c.pread(3, 0)).toString()).toBe("abc");
        await c.disconnect();
      }
    }));

  it("non-fixed newstyle server (--mask-handshake=0): exportName only", () =>
    withServer(["--mask-handshake=0", "memory", "1M"], async (k) => {
      const c = await NbdClient.connect({ path: k.sock });
      expect(c.handshakeFlags).toBe(0);
      expect(c.clientFlags).toBe(0);
      await expect(c.list()).rejects.toThrow(/not fixed newstyle/);
      expect((await c.exportName("")).size).toBe(1 << 20);
      expect(await c.pread(4, 0)).toEqual(Buffer.alloc(4));
      await c.disconnect();
      // open() falls back to NBD_OPT_EXPORT_NAME by itself.
      const d = await openClient({ path: k.sock });
      expect(d.size).toBe(1 << 20);
      expect(d.structuredReplies).toBe(false);
      await d.disconnect();
    }));

  it("rejects oldstyle servers", () =>
    withServer(["-o", "memory", "1M"], async (k) => {
      await expect(NbdClient.connect({ path: k.sock })).rejects.toThrow(/oldstyle/);
    }));

  it("rejects a server with bad magic, and one that hangs up", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nbdstate-client-"));
    const path = join(dir, "bad.sock");
    let mode = "garbage";
    const srv = net.createServer((s) => {
      if (mode === "garbage") s.end("SSH-2.0-OpenSSH_9.2\r\n\r\n\r\n");
      else if (mode === "hangup") s.end();
      else s.on("error", () => undefined);
    });
    await new Promise<void>((r) => srv.listen(path, r));
    try {
      await expect(NbdClient.connect({ path })).rejects.toThrow(/bad magic/);
      mode = "silent";
      await expect(NbdClient.connect({ path, timeout: 100 })).rejects.toThrow(/timed out after 100 ms/);
      mode = "hangup";
      await expect(NbdClient.connect({ path })).rejects.toThrow(/closed the connection|connection failed/);
      await expect(NbdClient.connect({ path: join(dir, "missing.sock") })).rejects.toThrow(/ENOENT/);
    } finally {
      srv.close();
      srv.unref();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe.skipIf(skip)("options (nbdkit)", () => {
  const dir = mkdtempSync(join(tmpdir(), "nbdstate-client-dir-"));
  writeFileSync(join(dir, "a.img"), Buffer.alloc(4096, 1));
  writeFileSync(join(dir, "b.img"), Buffer.alloc(8192, 2));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("list() and info() with several exports (file dir=)", () =>
    withServer(["file", `dir=${dir}`], async (k) => {
      const c = await NbdClient.connect({ path: k.sock });
      const list = await c.list();
      expect(list.map((e) => e.name).sort()).toEqual(["a.img", "b.img"]);
      const info = await c.info("b.img", [C.NBD_INFO_NAME]);
      expect(info).toMatchObject({ size: 8192, name: "b.img" });
      const err = await c.info("nope").catch((e) => e);
      expect(err).toBeInstanceOf(NbdOptionError);
      expect(err.replyName).toBe("NBD_REP_ERR_UNKNOWN");
      expect(err.replyType).toBe(C.NBD_REP_ERR_UNKNOWN);
      expect(err.optionName).toBe("NBD_OPT_INFO");
      // Still in option haggling after an error: go to a real export.
      expect((await c.go("a.img")).size).toBe(4096);
      expect(await c.pread(4, 0)).toEqual(Buffer.alloc(4, 1));
      await c.disconnect();
    }));

  it("list() with descriptions, info() name and description (exportname filter)", () =>
    withServer(
      ["--filter=exportname", "memory", "1M", "exportname=foo", "exportname=bar", "exportdesc=fixed:hello", "exportname-list=explicit"],
      async (k) => {
        const c = await NbdClient.connect({ path: k.sock });
        expect(await c.list()).toEqual([
          { name: "foo", description: "hello" },
          { name: "bar", description: "hello" },
        ]);
        const info = await c.info("foo", [C.NBD_INFO_NAME, C.NBD_INFO_DESCRIPTION]);
        expect(info).toMatchObject({ size: 1 << 20, name: "foo", description: "hello" });
        await c.abort();
        expect(c.phase).toBe("closed");
      },
    ));

  it("go() with block size (blocksize-policy filter)", () =>
    withServer(["--filter=blocksize-policy", "memory", "1M", "blocksize-minimum=512", "blocksize-preferred=4096", "blocksize-maximum=65536"], async (k) => {
      const c = await NbdClient.connect({ path: k.sock });
      const info = await c.go("", { requestBlockSize: true });
      expect(info.blockSize).toEqual({ minimum: 512, preferred: 4096, maximum: 65536 });
      expect(c.export).toBe(info);
      await c.disconnect();
    }));

  it("structured replies on, and off with --no-sr", async () => {
    await withServer(["memory", "1M"], async (k) => {
      const c = await NbdClient.connect({ path: k.sock });
      expect(await c.structuredReply()).toBe(true);
      expect(c.structuredReplies).toBe(true);
      await c.abort();
    });
    await withServer(["--no-sr", "memory", "1M"], async (k) => {
      const c = await NbdClient.connect({ path: k.sock });
      expect(await c.structuredReply()).toBe(false);
      expect(c.structuredReplies).toBe(false);
      await expect(c.setMetaContext("", [C.BASE_ALLOCATION])).rejects.toBeInstanceOf(NbdOptionError);
      await c.abort();
    });
  });

  it("list and set meta contexts", () =>
    withServer(["memory", "1M"], async (k) => {
      const c = await NbdClient.connect({ path: k.sock });
      await c.structuredReply();
      const all = await c.listMetaContext("", []);
      expect(all.map((m) => m.name)).toContain(C.BASE_ALLOCATION);
      expect(await c.listMetaContext("", ["base:"])).toEqual([expect.objectContaining({ name: C.BASE_ALLOCATION })]);
      expect(await c.setMetaContext("", ["x-nonexistent:foo"])).toEqual([]);
      const set = await c.setMetaContext("", [C.BASE_ALLOCATION]);
      expect(set).toHaveLength(1);
      expect(set[0].name).toBe(C.BASE_ALLOCATION);
      expect(c.metaContexts).toEqual(set);
      await c.go("");
      expect(await c.blockStatus(1 << 20, 0)).toEqual([{ length: 1 << 20, flags: C.NBD_STATE_HOLE | C.NBD_STATE_ZERO }]);
      await c.disconnect();
    }));

  it("raw option(): error replies are returned as data, not thrown", () =>
    withServer(["memory", "1M"], async (k) => {
      const c = await NbdClient.connect({ path: k.sock });
      const unknown = await c.option(99);
      expect(unknown).toHaveLength(1);
      expect(unknown[0].typeName).toBe("NBD_REP_ERR_UNSUP");
      const badList = await c.option(C.NBD_OPT_LIST, Buffer.from("junk"));
      expect(badList.map((f) => f.typeName)).toEqual(["NBD_REP_ERR_INVALID"]);
      const list = await c.raw.option(C.NBD_OPT_LIST);
      expect(list.map((f) => f.type)).toEqual([C.NBD_REP_SERVER, C.NBD_REP_ACK]);
      await expect(c.option(C.NBD_OPT_EXPORT_NAME)).rejects.toThrow(/exportName/);
      // A truncated NBD_OPT_GO payload is rejected by the server, not fatal.
      const go = await c.option(C.NBD_OPT_GO, Buffer.from([0, 0, 0, 9]));
      expect(go[go.length - 1].type).toBe(C.NBD_REP_ERR_INVALID);
      expect((await c.go("")).size).toBe(1 << 20);
      await c.disconnect();
    }));

  it("options are serialised when called concurrently", () =>
    withServer(["memory", "1M"], async (k) => {
      const c = await NbdClient.connect({ path: k.sock });
      // nbdkit answers NBD_OPT_LIST once per connection, hence only one list().
      const [a, b, s, d] = await Promise.all([c.list(), c.info(""), c.structuredReply(), c.listMetaContext("", [])]);
      expect(a).toEqual([{ name: "", description: "" }]);
      expect(b.size).toBe(1 << 20);
      expect(s).toBe(true);
      expect(d.map((m) => m.name)).toContain(C.BASE_ALLOCATION);
      await c.abort();
    }));

  it("writeRaw during option haggling: a raw option frame", () =>
    withServer(["memory", "1M"], async (k) => {
      const c = await NbdClient.connect({ path: k.sock });
      c.raw.writeRaw(encodeOption(C.NBD_OPT_STRUCTURED_REPLY));
      const reply = await c.raw.read(20);
      expect(reply.readUInt32BE(12)).toBe(C.NBD_REP_ACK);
      await c.abort();
    }));
});
