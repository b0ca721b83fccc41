// nbdinfo (libnbd-bin) against the server: export size and flags as nbdinfo
// reports them (--json), export listing (--list, --list --json), and the
// allocation map (--map) of a sparse memory disk.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { requireTools, TOOLS, PYTHON, requirePythonLibnbd } from "../helpers/tools.js";
import { run, runOk, startServer, SERVER_NAME, type RunningServer } from "../helpers/server.js";

const ok = requireTools([TOOLS.nbdinfo]) && requirePythonLibnbd();

interface NbdinfoExport {
  "export-name": string;
  "export-size": number;
  uri: string;
  contexts?: string[];
  is_read_only: boolean;
  is_rotational: boolean;
  can_cache: boolean;
  can_df: boolean;
  can_fast_zero: boolean;
  can_flush: boolean;
  can_fua: boolean;
  can_multi_conn: boolean;
  can_trim: boolean;
  can_zero: boolean;
}
interface NbdinfoJson {
  protocol: string;
  TLS: boolean;
  structured: boolean;
  exports: NbdinfoExport[];
}

async function infoJson(uri: string, extra: string[] = []): Promise<NbdinfoJson> {
  const r = await runOk("nbdinfo", ["--json", ...extra, uri]);
  return JSON.parse(r.stdout) as NbdinfoJson;
}

// The capability table nbdkit 1.32 advertises for these plugins, which
// nbdstate's plugins of the same name reproduce.
const FLAGS = {
  memory: {
    is_read_only: false,
    is_rotational: false,
    can_cache: true,
    can_df: true,
    can_fast_zero: true,
    can_flush: true,
    can_fua: true,
    can_multi_conn: true,
    can_trim: true,
    can_zero: true,
  },
  // -r: writes, trims, zeroes and FUA go; flush and cache stay.
  memoryReadonly: {
    is_read_only: true,
    is_rotational: false,
    can_cache: true,
    can_df: true,
    can_fast_zero: false,
    can_flush: true,
    can_fua: false,
    can_multi_conn: true,
    can_trim: false,
    can_zero: false,
  },
  // pattern is a read-only plugin.
  pattern: {
    is_read_only: true,
    is_rotational: false,
    can_cache: true,
    can_df: true,
    can_fast_zero: false,
    can_flush: false,
    can_fua: false,
    can_multi_conn: true,
    can_trim: false,
    can_zero: false,
  },
};

function pickFlags(e: NbdinfoExport) {
  const { is_read_only, is_rotational, can_cache, can_df, can_fast_zero, can_flush, can_fua, can_multi_conn, can_trim, can_zero } = e;
  return { is_read_only, is_rotational, can_cache, can_df, can_fast_zero, can_flush, can_fua, can_multi_conn, can_trim, can_zero };
}

describe.skipIf(!ok)(`nbdinfo against ${SERVER_NAME}`, () => {
  describe("memory size=1M", () => {
    let srv: RunningServer;
    beforeAll(async () => {
      srv = await startServer(["memory", "size=1M"]);
    });
    afterAll(async () => {
      await srv?.stop();
    });

    it("--json reports newstyle-fixed, structured replies, base:allocation, size and the memory capability flags", async () => {
      const j = await infoJson(srv.uri);
      expect(j.protocol).toBe("newstyle-fixed");
      expect(j.TLS).toBe(false);
      expect(j.structured).toBe(true);
      expect(j.exports).toHaveLength(1);
      const e = j.exports[0]!;
      expect(e["export-name"]).toBe("");
      expect(e["export-size"]).toBe(1048576);
      expect(e.contexts).toContain("base:allocation");
      expect(pickFlags(e)).toEqual(FLAGS.memory);
    });

    it("--size prints the size in bytes", async () => {
      const r = await runOk("nbdinfo", ["--size", srv.uri]);
      expect(r.stdout.trim()).toBe("1048576");
    });

    it("--list lists the default export (text)", async () => {
      const r = await runOk("nbdinfo", ["--list", srv.uri]);
      expect(r.stdout).toMatch(/^protocol: newstyle-fixed/m);
      expect(r.stdout).toMatch(/^export="":/m);
      expect(r.stdout).toMatch(/export-size: 1048576 \(1M\)/);
    });

    it("--list --json parses and holds exactly the default export", async () => {
      const j = await infoJson(srv.uri, ["--list"]);
      expect(j.protocol).toBe("newstyle-fixed");
      expect(j.exports.map((e) => e["export-name"])).toEqual([""]);
      expect(j.exports[0]!["export-size"]).toBe(1048576);
      expect(pickFlags(j.exports[0]!)).toEqual(FLAGS.memory);
    });
  });

  it("memory with -r: read-only flags", async () => {
    const srv = await startServer(["-r", "memory", "size=1M"]);
    try {
      const e = (await infoJson(srv.uri)).exports[0]!;
      expect(e["export-size"]).toBe(1048576);
      expect(pickFlags(e)).toEqual(FLAGS.memoryReadonly);
      const can = await run("nbdinfo", ["--can", "write", srv.uri]);
      expect(can.code).toBe(2); // nbdinfo --can: 0 = yes, 2 = no
    } finally {
      await srv.stop();
    }
  });

  it("pattern size=1M: read-only plugin flags", async () => {
    const srv = await startServer(["pattern", "size=1M"]);
    try {
      const e = (await infoJson(srv.uri)).exports[0]!;
      expect(e["export-size"]).toBe(1048576);
      expect(pickFlags(e)).toEqual(FLAGS.pattern);
    } finally {
      await srv.stop();
    }
  });

  it("--map on a sparse memory disk: written 64 KiB blocks are data, the rest holes", async () => {
    const srv = await startServer(["memory", "size=4M"]);
    try {
      // Empty disk: one hole,zero extent.
      const empty = await runOk("nbdinfo", ["--map", "--json", srv.uri]);
      const emptyMap = JSON.parse(empty.stdout) as Array<{ offset: number; length: number; type: number; description: string }>;
      expect(emptyMap.length).toBeGreaterThanOrEqual(1);
      expect(emptyMap.every((x) => x.type === 3)).toBe(true);
      expect(emptyMap.reduce((a, x) => a + x.length, 0)).toBe(4 << 20);

      // Write nonzero 64 KiB blocks at 1 MiB and 3 MiB + 128 KiB.
      const blocks = [1 << 20, (3 << 20) + (128 << 10)];
      const script = `
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for off in (${blocks.join(", ")}):
    h.pwrite(b"\\xa5" * 65536, off)
h.flush()
h.shutdown()
`;
      await runOk(PYTHON, ["-c", script, srv.uri]);

      const r = await runOk("nbdinfo", ["--map", "--json", srv.uri]);
      const map = JSON.parse(r.stdout) as Array<{ offset: number; length: number; type: number; description: string }>;
      // Extents tile the disk.
      let pos = 0;
      for (const x of map) {
        expect(x.offset).toBe(pos);
        pos += x.length;
      }
      expect(pos).toBe(4 << 20);
      const typeAt = (off: number) => map.find((x) => x.offset <= off && off < x.offset + x.length)!.type;
      for (const b of blocks) {
        for (let off = b; off < b + 65536; off += 4096) expect(typeAt(off), `offset ${off}`).toBe(0); // data
      }
      // Far from the writes: holes that read as zero.
      for (const off of [0, 512 << 10, 2 << 20, (4 << 20) - 4096]) expect(typeAt(off), `offset ${off}`).toBe(3);

      // The text form names the two kinds.
      const text = await runOk("nbdinfo", ["--map", srv.uri]);
      expect(text.stdout).toMatch(/\bhole,zero\b/);
      expect(text.stdout).toMatch(/\bdata\b/);
    } finally {
      await srv.stop();
    }
  });
});
