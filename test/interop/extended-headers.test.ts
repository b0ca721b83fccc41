// Extended headers (NBD_OPT_EXTENDED_HEADERS, doc/proto.md's
// extension-ext-header branch) with the clients that negotiate them first:
// qemu-img/qemu-io 10 (Debian's bookworm-backports) and nbdstate's own
// client; libnbd 1.14 (no extended headers) keeps compact headers. Sparse
// reads: holes come back as NBD_REPLY_TYPE_OFFSET_HOLE chunks, seen with
// python3-libnbd's pread_structured.
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, openSync, readFileSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openClient } from "../../src/client/index.js";
import * as C from "../../src/protocol/constants.js";
import { pythonOk } from "../helpers/python.js";
import { isNbdkit, makeTmpDir, removeTmpDir, run, runOk, startServer, waitFor, type RunningServer } from "../helpers/server.js";
import { requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** qemu 8.2 is the first to negotiate extended headers. */
function qemuVersion(): [number, number] {
  const r = spawnSync("qemu-img", ["--version"], { encoding: "utf8" });
  const m = /version (\d+)\.(\d+)/.exec(r.stdout ?? "");
  return m ? [Number(m[1]), Number(m[2])] : [0, 0];
}

const haveQemu = requireTools([TOOLS.qemuImg, TOOLS.qemuIo]);
const [qMajor, qMinor] = haveQemu ? qemuVersion() : [0, 0];
const qemuExtended = qMajor > 8 || (qMajor === 8 && qMinor >= 2);
if (haveQemu && !qemuExtended) {
  const msg = `qemu-img ${qMajor}.${qMinor} has no extended headers: install qemu-utils from bookworm-backports (apt-get install -t bookworm-backports qemu-utils)`;
  if (process.env.CI === "true") throw new Error(`[CI] ${msg}`);
  console.warn(`SKIP: ${msg}`);
}
const haveLibnbd = requireTools([TOOLS.nbdinfo, TOOLS.nbdcopy]) && requirePythonLibnbd();

describe.skipIf(isNbdkit)("extended headers", () => {
  let dir: string;
  beforeAll(() => {
    dir = makeTmpDir("nbdstate-ext-");
  });
  afterAll(() => removeTmpDir(dir));

  describe.skipIf(!haveQemu || !qemuExtended)("qemu-img and qemu-io 10", () => {
    let srv: RunningServer;
    beforeAll(async () => {
      srv = await startServer(["-v", "memory", "64M"]);
    });
    afterAll(async () => srv?.stop());

    it("write and read a disk through extended headers (qemu-img convert), every byte equal", async () => {
      const src = join(dir, "src.img");
      const data = randomBytes(8 * MiB);
      writeFileSync(src, data);
      await runOk("qemu-img", ["convert", "-n", "-f", "raw", "-O", "raw", src, srv.uri]);
      const back = join(dir, "back.img");
      await runOk("qemu-img", ["convert", "-f", "raw", "-O", "raw", srv.uri, back]);
      expect(readFileSync(back).subarray(0, data.length).equals(data)).toBe(true);
      expect(await waitFor(() => /: extended headers, base:allocation/.test(srv.stderr))).toBe(true);
      expect(srv.stderr).not.toMatch(/bad request magic|closed: .*fatal/i);
    });

    it("qemu-io: write, read back, write zeroes, discard; qemu-img map reads BLOCK_STATUS_EXT", async () => {
      const r = await runOk("qemu-io", [
        "-f", "raw",
        "-c", "write -P 0x55 16M 64k", "-c", "read -P 0x55 16M 64k",
        "-c", "write -z 17M 1M", "-c", "read -P 0 17M 1M",
        "-c", "discard 18M 1M", "-c", "read -P 0 18M 1M",
        srv.uri,
      ]);
      expect(r.stdout).not.toMatch(/failed|Pattern verification failed/);
      expect(r.stdout.match(/^read \d+\/\d+ bytes/gm)).toHaveLength(3);
      const map = JSON.parse((await runOk("qemu-img", ["map", "--output=json", "-f", "raw", srv.uri])).stdout) as { start: number; length: number; data: boolean; zero: boolean }[];
      const at = (off: number) => map.find((e) => e.start <= off && off < e.start + e.length)!;
      expect(at(16 * MiB).data).toBe(true);
      expect(at(20 * MiB)).toMatchObject({ data: false, zero: true });
      expect(map.reduce((n, e) => n + e.length, 0)).toBe(64 * MiB);
    });
  });

  describe("nbdstate's own client", () => {
    let srv: RunningServer;
    beforeAll(async () => {
      srv = await startServer(["-v", "memory", "6G"]);
    });
    afterAll(async () => srv?.stop());

    it("negotiates extended headers, and 64-bit effect lengths work for WRITE_ZEROES, TRIM, CACHE and BLOCK_STATUS", async () => {
      const c = await openClient({ path: srv.sock, metaContexts: [C.BASE_ALLOCATION] });
      try {
        expect(c.extendedHeaders).toBe(true);
        expect(c.transmissionFlags & C.NBD_FLAG_BLOCK_STATUS_PAYLOAD).toBe(C.NBD_FLAG_BLOCK_STATUS_PAYLOAD);
        await c.pwrite(Buffer.alloc(4096, 7), 5 * GiB);
        await c.pwrite(Buffer.alloc(4096, 8), 0);
        // One request over more than 4 GiB: impossible with compact headers.
        const ext = await c.blockStatus(6 * GiB, 0);
        expect(ext.reduce((n, e) => n + e.length, 0)).toBe(6 * GiB);
        expect(ext[0]).toEqual({ length: 32768, flags: 0 });
        await c.zero(5 * GiB, 0);
        expect((await c.pread(4096, 0)).equals(Buffer.alloc(4096))).toBe(true);
        expect((await c.pread(4096, 5 * GiB)).equals(Buffer.alloc(4096, 7))).toBe(true);
        await c.trim(5 * GiB + 4096, 0);
        await c.cache(5 * GiB, 0);
        expect(await c.blockStatus(6 * GiB, 0)).toEqual([{ length: 6 * GiB, flags: 3 }]);
      } finally {
        await c.disconnect();
      }
    });

    it("the BLOCK_STATUS payload form asks for chosen contexts; an unknown id is EINVAL and the payload is consumed", async () => {
      const c = await openClient({ path: srv.sock, metaContexts: [C.BASE_ALLOCATION] });
      try {
        const id = c.metaContexts[0]!.id;
        const payload = (ids: number[]) => {
          const b = Buffer.alloc(8 + 4 * ids.length);
          b.writeBigUInt64BE(65536n, 0);
          ids.forEach((x, i) => b.writeUInt32BE(x, 8 + 4 * i));
          return b;
        };
        const ok = await c.raw.request({ type: C.NBD_CMD_BLOCK_STATUS, flags: C.NBD_CMD_FLAG_PAYLOAD_LEN, offset: 0, payload: payload([id]) });
        expect(ok.error).toBe(0);
        expect(ok.frames.map((f) => (f.kind === "structured" ? f.typeName : f.kind))).toEqual(["NBD_REPLY_TYPE_BLOCK_STATUS_EXT"]);
        const bad = await c.raw.request({ type: C.NBD_CMD_BLOCK_STATUS, flags: C.NBD_CMD_FLAG_PAYLOAD_LEN, offset: 0, payload: payload([id + 5]) });
        expect(bad.error).toBe(C.NBD_EINVAL);
        // The connection is still in step: the next request works.
        expect((await c.pread(512, 0)).length).toBe(512);
      } finally {
        await c.disconnect();
      }
    });

    it("option rules: STRUCTURED_REPLY after it is EXT_HEADER_REQD, a second request is INVALID, EXPORT_NAME closes", async () => {
      const { NbdClient } = await import("../../src/client/index.js");
      const c = await NbdClient.connect({ path: srv.sock });
      expect(await c.extendedHeadersOption()).toBe(true);
      const sr = await c.option(C.NBD_OPT_STRUCTURED_REPLY);
      expect(sr.at(-1)!.type).toBe(C.NBD_REP_ERR_EXT_HEADER_REQD);
      const again = await c.option(C.NBD_OPT_EXTENDED_HEADERS);
      expect(again.at(-1)!.type).toBe(C.NBD_REP_ERR_INVALID);
      // "a client that has used NBD_OPT_EXTENDED_HEADERS ... MUST NOT use" EXPORT_NAME: no reply, the server hangs up.
      await expect(c.exportName("")).rejects.toThrow();
      expect(await Promise.race([c.closed.then(() => true), new Promise((r) => setTimeout(() => r(false), 5000))])).toBe(true);
    });

    it("a compact request after extended headers is a bad magic: the connection is cut, the server keeps serving", async () => {
      const c = await openClient({ path: srv.sock });
      expect(c.extendedHeaders).toBe(true);
      const compact = Buffer.alloc(28);
      compact.writeUInt32BE(C.NBD_REQUEST_MAGIC, 0);
      c.raw.writeRaw(compact);
      await c.closed;
      const d = await openClient({ path: srv.sock });
      expect((await d.pread(512, 0)).length).toBe(512);
      await d.disconnect();
    });

    it("the nbd plugin speaks extended headers to an nbdstate upstream, and compact ones to nbdkit", async () => {
      const proxy = await startServer(["-v", "nbd", `socket=${srv.sock}`]);
      try {
        await runOk("nbdinfo", ["--size", proxy.uri]);
        const n = (srv.stderr.match(/: extended headers/g) ?? []).length;
        expect(n).toBeGreaterThan(0);
      } finally {
        await proxy.stop();
      }
    });
  });

  describe.skipIf(!haveLibnbd)("libnbd 1.14 (no extended headers) keeps compact headers", () => {
    let srv: RunningServer;
    beforeAll(async () => {
      srv = await startServer(["-v", "memory", "16M"]);
    });
    afterAll(async () => srv?.stop());

    it("nbdinfo, nbdcopy both ways", async () => {
      const info = await runOk("nbdinfo", [srv.uri]);
      expect(info.stdout).toMatch(/using structured packets/);
      const src = join(dir, "c.img");
      const data = randomBytes(4 * MiB);
      writeFileSync(src, data);
      await runOk("nbdcopy", [src, srv.uri]);
      const back = join(dir, "c.back");
      await runOk("nbdcopy", [srv.uri, back]);
      expect(readFileSync(back).subarray(0, data.length).equals(data)).toBe(true);
      expect(srv.stderr).toMatch(/: structured replies, base:allocation/);
      expect(srv.stderr).not.toMatch(/: extended headers/);
    });
  });

  describe.skipIf(!requirePythonLibnbd())("sparse reads: holes as NBD_REPLY_TYPE_OFFSET_HOLE (python3-libnbd pread_structured)", () => {
    const script = String.raw`
h = connect()
want = EXTRA[0]
def chunks(count, offset, flags=0):
    seen = []
    def cb(buf, off, status, err):
        seen.append((off, len(buf), "hole" if status == nbd.READ_HOLE else "data" if status == nbd.READ_DATA else "other"))
        if status == nbd.READ_HOLE:
            assert buf == bytearray(len(buf)), "a hole reads as zeros"
        return 0
    data = h.pread_structured(count, offset, cb, flags)
    return seen, data
if want == "memory":
    h.pwrite(b"\x11" * 65536, 65536)
    seen, data = chunks(4 * 65536, 0)
    eq(sorted(seen), [(0, 65536, "hole"), (65536, 65536, "data"), (131072, 131072, "hole")], "chunks")
    eq(data[65536:131072], b"\x11" * 65536, "data")
    eq(data[:65536], bytes(65536), "hole bytes")
    # NBD_CMD_FLAG_DF: "MUST NOT fragment the reply": one data chunk.
    seen, _ = chunks(4 * 65536, 0, nbd.CMD_FLAG_DF)
    eq(seen, [(0, 262144, "data")], "DF")
elif want == "file":
    seen, data = chunks(3 * 1048576, 0)
    kinds = [k for (_, _, k) in sorted(seen)]
    assert "hole" in kinds and "data" in kinds, seen
    eq(data[1048576:1048576 + 4096], b"\x22" * 4096, "data in the middle")
    eq(data[:4096], bytes(4096), "leading hole")
elif want == "null":
    seen, _ = chunks(1048576, 0)
    eq(seen, [(0, 1048576, "hole")], "null is all hole")
print("OK")
`;

    it("a hole of the memory plugin", async () => {
      const srv = await startServer(["memory", "1M"]);
      try {
        await pythonOk(script, srv.uri, ["memory"]);
      } finally {
        await srv.stop();
      }
    });

    it("the holes of a sparse file (file plugin)", async () => {
      const f = join(dir, "sparse.img");
      const fd = openSync(f, "w");
      writeSync(fd, Buffer.alloc(4096, 0x22), 0, 4096, MiB);
      closeSync(fd);
      await run("truncate", ["-s", String(3 * MiB), f]);
      const srv = await startServer(["file", f]);
      try {
        await pythonOk(script, srv.uri, ["file"]);
      } finally {
        await srv.stop();
      }
    });

    it("the null plugin is one hole", async () => {
      const srv = await startServer(["null", "1M"]);
      try {
        await pythonOk(script, srv.uri, ["null"]);
      } finally {
        await srv.stop();
      }
    });
  });
});
