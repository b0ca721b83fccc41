// The data plugin from the command line, under nbdkit and nbdstate with
// the same arguments: flags (nbdinfo --json), every byte (nbdcopy), the
// allocation map (nbdinfo --map), a libnbd script writing, zeroing and
// trimming, nbdcopy onto the disk, and errors at startup. The format
// itself is covered expression by expression in data-format.test.ts.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fillPattern } from "../../src/plugins/pattern/index.js";
import { makeTmpDir, removeTmpDir, runCli } from "../helpers/server.js";
import { requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";
import { exportFlags, pythonCommand, runOkUnder, runUnder, SERVERS, type Server } from "./cli-diff.js";

const ok = requireTools([TOOLS.nbdkit, TOOLS.nbdinfo, TOOLS.nbdcopy]) && requirePythonLibnbd();

describe.skipIf(!ok)("data plugin: nbdkit and nbdstate", () => {
  let dir: string;
  beforeAll(() => {
    dir = makeTmpDir("nbdstate-data-cli-");
    writeFileSync(join(dir, "sector"), Buffer.alloc(300, 0x42));
    const pattern = Buffer.alloc(1 << 20);
    fillPattern(pattern, 0);
    writeFileSync(join(dir, "pattern"), pattern);
  });
  afterAll(() => removeTmpDir(dir));

  const both = <T>(f: (srv: Server) => Promise<T>) => Promise.all(SERVERS.map(f));

  it("advertise the same size and flags, read-write and with -r", async () => {
    const [k, s] = await both((srv) => exportFlags(srv, ["data", "1 2 3", "size=1M"]));
    expect(s).toEqual(k);
    const [kr, sr] = await both((srv) => exportFlags(srv, ["-r", "data", "base64=MTIz"]));
    expect(sr).toEqual(kr);
    expect(sr!["is_read_only"]).toBe(true);
  });

  it("serve the same bytes for the same command lines", async () => {
    const cases: string[][] = [
      ["data", " <sector @^512 <sector @^512 ", "size=4K"],
      ["data", "data=$p*3 <(printf 'x%.0s' 1 2 3)", "p=0x55 0xAA"],
      ["data", "raw=Hello, world!"],
      ["data", "base64=aGVsbG8gbmJka2l0IHVzZXI=", "size=100"],
      ["data", '( "Hello" )*2000', "size=8192"],
    ];
    for (const args of cases) {
      const [k, s] = await both((srv) => runOkUnder(srv, args, 'nbdcopy "$uri" -', { cwd: dir }));
      expect(s!.stdoutBuf.length, args.join(" ")).toBe(k!.stdoutBuf.length);
      expect(s!.stdoutBuf.equals(k!.stdoutBuf), args.join(" ")).toBe(true);
    }
  });

  it("report the same allocation map", async () => {
    const args = ["data", "1 @65536 2 @100000 0x11 0x22 3 @1048576 4 @2097152"];
    const [k, s] = await both((srv) => runOkUnder(srv, args, 'nbdinfo --map "$uri"'));
    expect(s!.stdout).toBe(k!.stdout);
    expect(s!.stdout).toMatch(/hole,zero/);
  });

  it.each(SERVERS)("%s: a client writes, zeroes and trims; holes come and go", async (srv) => {
    const cmd = pythonCommand(
      dir,
      String.raw`
h = connect()
eq(h.get_size(), 1 << 20, "size")
eq(h.pread(4, 0), b"\x01\x02\x03\x00", "initial data")
h.pwrite(b"\xab" * 5000, 100000)
eq(h.pread(5002, 99999), b"\0" + b"\xab" * 5000 + b"\0", "written")
h.zero(5000, 100000)
eq(h.pread(5000, 100000), bytes(5000), "zeroed")
h.trim(4, 0)
eq(h.pread(4, 0), bytes(4), "trimmed")
h.flush()
h.pwrite(b"\x07", 500000, nbd.CMD_FLAG_FUA)
ext = extents(h, 1 << 20, 0)
eq(sum(l for (_, l, _) in ext), 1 << 20, "extents cover the disk")
assert any(f == 0 and o <= 500000 < o + l for (o, l, f) in ext), ext
assert all(f == 3 for (o, l, f) in ext if o + l <= 32768), ext
h.zero(32768, 491520, nbd.CMD_FLAG_FAST_ZERO)
eq(extents(h, 1 << 20, 0), [(0, 1 << 20, 3)], "all holes again")
print("OK")
`,
    );
    expect((await runOkUnder(srv, ["data", "1 2 3", "size=1M"], cmd)).stdout).toMatch(/^OK$/m);
  });

  it.each(SERVERS)("%s: nbdcopy writes a disk onto it and reads it back", async (srv) => {
    const r = await runOkUnder(
      srv,
      ["data", "0xff*10", "size=1M"],
      'nbdcopy -- [ nbdkit pattern 1M ] "$uri" && nbdcopy "$uri" - | cmp - pattern && echo SAME',
      { cwd: dir },
    );
    expect(r.stdout).toContain("SAME");
  });

  it.each(SERVERS)("%s: refuses a bad data string at startup with one line", async (srv) => {
    for (const args of [["data", "1 2 )"], ["data", "<no-such-file"], ["data", "$undefined_var"], ["data", "size=1M"]]) {
      const r = await runUnder(srv, args, "true");
      expect(r.code, args.join(" ")).toBe(1);
      expect(r.stderr.trim().split("\n"), r.stderr).toHaveLength(1);
      if (srv === "nbdstate") expect(r.stderr).toMatch(/^nbdstate: error: data: /);
    }
  });
});

describe("data plugin: --dump-plugin and --help", () => {
  it("dumps data_base64=yes and documents every parameter", async () => {
    const d = await runCli(["data", "--dump-plugin"]);
    expect(d.code).toBe(0);
    expect(d.stdout).toMatch(/^name=data$/m);
    expect(d.stdout).toMatch(/^data_base64=yes$/m);
    const h = await runCli(["data", "--help"]);
    expect(h.code).toBe(0);
    for (const k of ["[data=]", "raw=", "base64=", "size=", "allocator="]) expect(h.stdout).toContain(k);
  });
});
