// The sh plugin as a user runs it: scripts written here, served by nbdkit
// AND nbdstate with the same command line (`sh ./script.sh key=value`), the
// two compared with real clients: size and flags (nbdinfo --json), listings
// (nbdinfo --list --json), extents (nbdinfo --map), errors (errno through
// python3-libnbd) and every byte (nbdcopy, libnbd). nbdkit 1.32's sh plugin
// knows exit statuses 0-3 only, so statuses 4-8 (nbdkit 1.34) are tested on
// nbdstate alone.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NBDSTATE_BIN, run, runOk, waitFor } from "../helpers/server.js";
import { pythonOk, runPython } from "../helpers/python.js";
import { requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";
import { each, flags, flagsNoBlockSize, makeTmpDir, removeTmpDir, serve, writeScript } from "./script-servers.js";
import { parseBlockSize, parseDefaultExport, parseExports, parseExtents, parseThreadModel } from "../../src/plugins/sh/parse.js";
import { scriptError } from "../../src/plugins/sh/status.js";
import { NBD_EIO, NBD_ENOSPC, NBD_EPERM, NBD_ESHUTDOWN } from "../../src/protocol/constants.js";

const ok = requireTools([TOOLS.nbdkit, TOOLS.nbdinfo, TOOLS.nbdcopy]) && requirePythonLibnbd();

let dir: string;
beforeAll(() => {
  dir = makeTmpDir("nbdstate-sh-test-");
});
afterAll(() => dir && removeTmpDir(dir));

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const nbdstate = (args: string[]) => run(process.execPath, [NBDSTATE_BIN, ...args], { timeoutMs: 20_000 });

/** A RAM disk in a file under $tmpdir, in the spirit of nbdkit's example.sh. */
const RAMDISK = String.raw`
disk="$tmpdir/disk"
case "$1" in
  load) truncate -s 1M "$disk" ;;
  get_size) stat -L -c %s "$disk" ;;
  can_write|can_flush|can_trim|can_zero|can_fast_zero|can_multi_conn) exit 0 ;;
  can_fua|can_cache) echo native ;;
  pread) dd if="$disk" skip="$4" count="$3" iflag=count_bytes,skip_bytes status=none ;;
  pwrite) dd of="$disk" seek="$4" conv=notrunc oflag=seek_bytes status=none ;;
  trim|zero)
    case "$5" in *fast*) echo "ENOTSUP zeroing is not fast here" >&2; exit 1 ;; esac
    dd if=/dev/zero of="$disk" seek="$4" count="$3" iflag=count_bytes oflag=seek_bytes conv=notrunc status=none ;;
  flush) sync "$disk" ;;
  cache) ;;
  *) exit 2 ;;
esac
`;

/** Writes, zeroes, trims and flushes, checked against a model; prints the disk's sha256. */
const RAMDISK_OPS = String.raw`
import hashlib
h = connect()
size = h.get_size()
model = bytearray(size)
def w(off, data, fl=0):
    h.pwrite(data, off, fl)
    model[off:off + len(data)] = data
def z(off, n):
    model[off:off + n] = bytes(n)
w(0, bytes(range(256)) * 16)
w(5000, b"hello world" * 100, nbd.CMD_FLAG_FUA)
w(size - 4096, b"\xaa" * 4096)
w(300000, bytes((i * 7 + 3) % 251 for i in range(70000)))
h.zero(1000, 100); z(100, 1000)
h.zero(4096, 8192, nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FUA); z(8192, 4096)
expect_err(errno.ENOTSUP, h.zero, 512, 0, nbd.CMD_FLAG_FAST_ZERO)
h.trim(1024, 310000); z(310000, 1024)
h.flush()
h.cache(4096, 0)
got = h.pread(size, 0)
eq(got, bytes(model), "disk")
print(hashlib.sha256(got).hexdigest())
print("OK")
`;

describe("sh plugin: what scripts print, parsed", () => {
  it("list_exports: a last line without its newline still counts (nbdkit drops it)", () => {
    expect(parseExports("NAMES\na\nb")).toEqual([{ name: "a" }, { name: "b" }]);
    expect(parseExports("INTERLEAVED\na\nA\nb")).toEqual([{ name: "a", description: "A" }, { name: "b" }]);
    expect(parseExports("NAMES+DESCRIPTIONS\na\nb\nA\nB")).toEqual([{ name: "a", description: "A" }, { name: "b", description: "B" }]);
    // An odd count: the first half rounded up are names (as nbdkit).
    expect(parseExports("NAMES+DESCRIPTIONS\na\nb\nc\n")).toEqual([{ name: "a", description: "c" }, { name: "b" }]);
    expect(parseExports("")).toEqual([]);
    expect(parseExports("NAMES")).toEqual([]);
    expect(parseExports("unknown-mode\nx\n")).toEqual([{ name: "unknown-mode" }, { name: "x" }]);
  });
  it("default_export: the first name of any list form, else \"\"", () => {
    expect(parseDefaultExport("INTERLEAVED\nfoo\ndesc\n")).toBe("foo");
    expect(parseDefaultExport("bar")).toBe("bar");
    expect(parseDefaultExport("NAMES\n")).toBe("");
  });
  it("extents: clipped to the request, merged by type; gaps, late starts and garbage are errors", () => {
    expect(parseExtents("s", "0 1M\n1M 1M hole\n2M 2M hole\n", 512, 3 << 20)).toEqual([
      { length: (1 << 20) - 512, type: 0 },
      { length: (2 << 20) + 512, type: 1 },
    ]);
    expect(parseExtents("s", "0\t4096 zero,hole\n4096 0 0\n", 0, 100)).toEqual([{ length: 100, type: 3 }]);
    expect(parseExtents("s", "0 4096 7\n", 0, 10)).toEqual([{ length: 10, type: 3 }]);
    expect(() => parseExtents("s", "0 10\n20 10\n", 0, 30)).toThrow(/contiguous/);
    expect(() => parseExtents("s", "10 10\n", 0, 30)).toThrow(/must not start after/);
    expect(() => parseExtents("s", "0\n", 0, 30)).toThrow(/cannot parse/);
    expect(() => parseExtents("s", "0 lots\n", 0, 30)).toThrow(/could not parse/);
    expect(() => parseExtents("s", "", 0, 30)).toThrow(/no extent/);
  });
  it("block_size: three sizes checked as nbdkit checks them; 0 0 0 is none", () => {
    expect(parseBlockSize("s", "1 4K 4294967295")).toEqual({ minimum: 1, preferred: 4096, maximum: 2 ** 32 - 1 });
    expect(parseBlockSize("s", "0 0 0\n")).toBeNull();
    expect(() => parseBlockSize("s", "3 4K 1M")).toThrow(/power of 2/);
    expect(() => parseBlockSize("s", "512 4K")).toThrow(/cannot be parsed/);
    expect(() => parseBlockSize("s", "4K 512 1M")).toThrow(/preferred/);
  });
  it("thread_model: nbdkit's four names (dashes too), anything else the safe default", () => {
    expect(parseThreadModel("parallel\n")).toBe("parallel");
    expect(parseThreadModel("Serialize-Requests")).toBe("serialize_requests");
    expect(parseThreadModel("fast please")).toBe("serialize_all_requests");
  });
  it("errors: the errno name first on stderr, any case, then whitespace; else the fallback", () => {
    expect(scriptError("s", "ENOSPC Out of space\n", NBD_EIO)).toMatchObject({ errno: NBD_ENOSPC, message: "s: Out of space" });
    expect(scriptError("s", "eperm\n", NBD_EIO)).toMatchObject({ errno: NBD_EPERM, message: "s: eperm" });
    expect(scriptError("s", "EPERMISSION denied", NBD_EIO)).toMatchObject({ errno: NBD_EIO, message: "s: EPERMISSION denied" });
    expect(scriptError("s", "first\nsecond\n", NBD_ESHUTDOWN)).toMatchObject({ errno: NBD_ESHUTDOWN, message: "s: first" });
    expect(scriptError("s", "", NBD_EIO).message).toMatch(/did not print an error message/);
  });
});

describe.skipIf(!ok)("sh plugin: the same script under nbdkit and nbdstate", () => {
  it("a RAM disk script: same flags, and writes/zeroes/trims land the same bytes (libnbd, nbdcopy)", async () => {
    const script = writeScript(dir, "ramdisk.sh", RAMDISK);
    const src = join(dir, "src.img");
    writeFileSync(src, Buffer.concat([Buffer.alloc(100_000, 7), Buffer.from("x".repeat(948_576))]));
    const got = await each(["sh", script], async (s) => {
      const f = await flagsNoBlockSize(s.uri);
      const ops = (await pythonOk(RAMDISK_OPS, s.uri)).stdout.split("\n")[0];
      const out = join(dir, `out-${s.kind}.img`);
      await runOk("nbdcopy", [s.uri, out]);
      const copied = sha(readFileSync(out));
      await runOk("nbdcopy", [src, s.uri]);
      const back = join(dir, `back-${s.kind}.img`);
      await runOk("nbdcopy", [s.uri, back]);
      return { f, ops, copied, back: sha(readFileSync(back)) };
    });
    expect(got.nbdstate).toEqual(got.nbdkit);
    expect(got.nbdstate.f).toMatchObject({
      "export-size": 1 << 20, is_read_only: false, can_flush: true, can_fua: true, can_trim: true, can_zero: true,
      can_fast_zero: true, can_multi_conn: true, can_cache: true,
    });
    expect(got.nbdstate.copied).toBe(got.nbdstate.ops);
    expect(got.nbdstate.back).toBe(sha(readFileSync(src)));
  });

  it("the man page's inline script (sh -, read from stdin): a 1M read-only disk of zeros", async () => {
    const inline = `case "$1" in\n  get_size) echo 1M ;;\n  pread) dd if=/dev/zero count=$3 iflag=count_bytes ;;\n  *) exit 2 ;;\nesac\n`;
    const got = await each(
      ["sh", "-"],
      async (s) => {
        const f = await flagsNoBlockSize(s.uri);
        const out = join(dir, `inline-${s.kind}.img`);
        await runOk("nbdcopy", [s.uri, out]);
        return { f, data: sha(readFileSync(out)) };
      },
      { input: inline },
    );
    expect(got.nbdstate).toEqual(got.nbdkit);
    expect(got.nbdstate.f).toMatchObject({ "export-size": 1 << 20, is_read_only: true, can_zero: false, can_flush: false, can_cache: false });
    expect(got.nbdstate.data).toBe(sha(Buffer.alloc(1 << 20)));
  });

  it("errors: 'ERRNO message' on stderr becomes the client's errno, the same in both", async () => {
    const script = writeScript(dir, "errors.sh", String.raw`
case "$1" in
  get_size) echo 64K ;;
  can_write|can_trim|can_zero|can_flush) exit 0 ;;
  pread)
    case "$4" in
      0) echo 'EPERM x' >&2; exit 1 ;;
      512) echo 'ENOSPC out of space' >&2; exit 1 ;;
      1024) echo 'enospc: a colon is not whitespace' >&2; exit 1 ;;
      1536) exit 1 ;;
      2048) echo EINVALID >&2; exit 1 ;;
      2560) echo 'ENOTSUP nope' >&2; exit 1 ;;
      3072) echo EROFS >&2; exit 9 ;;
      3584) printf abc ;;
      4096) exit 3 ;;
      4608) echo EDQUOT >&2; exit 1 ;;
      5120) echo 'efbig lower case' >&2; exit 1 ;;
      5632) echo EOVERFLOW >&2; exit 1 ;;
      6144) echo 'ESHUTDOWN going' >&2; exit 1 ;;
      6656) echo ENOMEM >&2; exit 1 ;;
      7168) echo EINVAL >&2; exit 255 ;;
      7680) echo 'ok prefix ignored when it succeeds' >&2; dd if=/dev/zero count=$3 iflag=count_bytes status=none ;;
      *) kill -9 $$ ;;
    esac ;;
  pwrite) cat >/dev/null; echo 'ENOSPC disk full' >&2; exit 1 ;;
  flush) echo 'EIO flush failed' >&2; exit 1 ;;
  trim) echo EPERM >&2; exit 1 ;;
  zero) echo 'EOPNOTSUPP so pwrite is tried' >&2; exit 1 ;;
  *) exit 2 ;;
esac
`);
    const py = String.raw`
import json
h = connect()
res = {}
def name(fn, *a):
    try:
        fn(*a)
        return "ok"
    except nbd.Error as e:
        return errno.errorcode.get(e.errnum, str(e.errnum))
for off in range(0, 8192 + 512, 512):
    res["pread %d" % off] = name(h.pread, 512, off)
res["pwrite"] = name(h.pwrite, b"x" * 512, 0)
res["flush"] = name(h.flush)
res["trim"] = name(h.trim, 512, 0)
res["zero"] = name(h.zero, 512, 0)
print(json.dumps(res, sort_keys=True))
print("OK")
`;
    const got = await each(["sh", script], async (s) => JSON.parse((await pythonOk(py, s.uri)).stdout.split("\n")[0]!) as Record<string, string>);
    // A short read: nbdkit 1.32 leaves errno unset, so the client gets whatever
    // errno the thread had last (here EPERM from the request before); EIO is right.
    const { "pread 3584": shortKit, ...kit } = got.nbdkit;
    const { "pread 3584": shortState, ...state } = got.nbdstate;
    expect(state).toEqual(kit);
    expect([shortKit, shortState]).toEqual([expect.any(String), "EIO"]);
    expect(got.nbdstate).toEqual({
      "pread 0": "EPERM", "pread 512": "ENOSPC", "pread 1024": "EIO", "pread 1536": "EIO", "pread 2048": "EIO",
      // nbdkit sends ENOTSUP and EOVERFLOW as EINVAL except for fast zero / DF reads.
      "pread 2560": "EINVAL", "pread 3072": "EPERM", "pread 3584": "EIO", "pread 4096": "EIO", "pread 4608": "ENOSPC",
      "pread 5120": "ENOSPC", "pread 5632": "EINVAL", "pread 6144": "ESHUTDOWN", "pread 6656": "ENOMEM",
      "pread 7168": "EINVAL", "pread 7680": "ok", "pread 8192": "EIO",
      pwrite: "ENOSPC", flush: "EIO", trim: "EPERM", zero: "ENOSPC",
    });
  });

  it("list_exports in its three formats, default_export, the handle from open, export_description", async () => {
    const script = writeScript(dir, "exports.sh", String.raw`
case "$1" in
  config) [ "$2" = mode ] || { echo "EINVAL unknown parameter $2" >&2; exit 1; }; printf '%s\n' "$3" > "$tmpdir/mode" ;;
  list_exports)
    case "$(cat "$tmpdir/mode")" in
      names) printf 'NAMES\nalpha\nbeta\ngamma\n' ;;
      interleaved) printf 'INTERLEAVED\nalpha\nthe first disk\nbeta\nthe second disk\n' ;;
      both) printf 'NAMES+DESCRIPTIONS\nalpha\nbeta\ngamma\nfirst\nsecond\nthird\n' ;;
    esac ;;
  default_export) printf 'NAMES\nbeta\nalpha\n' ;;
  open) echo "handle-$3-$1-$2" ;;
  get_size) case "$2" in handle-alpha-*) echo 1K ;; handle-beta-*) echo 2K ;; *) echo 4K ;; esac ;;
  export_description) echo "described by [$2]" ;;
  pread) dd if=/dev/zero count=$3 iflag=count_bytes status=none ;;
  *) exit 2 ;;
esac
`);
    // (Output with no mode line is NAMES: see the parsing tests.)
    for (const mode of ["names", "interleaved", "both"]) {
      const got = await each(["sh", script, `mode=${mode}`], async (s) => {
        const list = JSON.parse((await runOk("nbdinfo", ["--list", "--json", s.uri])).stdout) as { exports: Array<Record<string, unknown>> };
        for (const e of list.exports) {
          delete e.uri;
          // nbdstate's core always sends block sizes; nbdkit only when the plugin has some.
          delete e.block_size_minimum;
          delete e.block_size_preferred;
          delete e.block_size_maximum;
        }
        const def = await flagsNoBlockSize(s.uri);
        return { list: list.exports, def };
      });
      expect(got.nbdstate, mode).toEqual(got.nbdkit);
      const names = got.nbdstate.list.map((e) => e["export-name"]);
      expect(names, mode).toEqual(mode === "interleaved" ? ["alpha", "beta"] : ["alpha", "beta", "gamma"]);
      if (mode === "both") expect(got.nbdstate.list.map((e) => e.description)).toEqual(["first", "second", "third"]);
      if (mode === "interleaved") expect(got.nbdstate.list[1]!.description).toBe("the second disk");
    }
  });

  it("extents: 'offset length type' lines clipped to each request, the same map in both (nbdinfo --map)", async () => {
    const script = writeScript(dir, "extents.sh", String.raw`
case "$1" in
  get_size) echo 1M ;;
  can_extents) exit 0 ;;
  pread) dd if=/dev/zero count=$3 iflag=count_bytes status=none ;;
  extents) printf '0 64K\n64K 64K hole,zero\n128K 128k 3\n256K 256K zero\n512K 256K hole\n768K 256K 0\n' ;;
  *) exit 2 ;;
esac
`);
    // nbdkit lets the last extent run past the request, nbdstate's core cuts
    // it at the request's end (both allowed): compare within the request.
    const py = String.raw`
def within(count, offset, flags=0):
    return [(o, min(n, offset + count - o), t) for o, n, t in extents(h, count, offset, flags)]
h = connect()
print(within(100000, 70000))
print(within(200000, 65536 + 5, nbd.CMD_FLAG_REQ_ONE))
print(within(4096, 1 << 19))
print("OK")
`;
    const got = await each(["sh", script], async (s) => ({
      map: (await runOk("nbdinfo", ["--map", s.uri])).stdout,
      py: (await pythonOk(py, s.uri)).stdout,
    }));
    expect(got.nbdstate).toEqual(got.nbdkit);
    expect(got.nbdstate.map).toMatch(/^\s*0\s+65536\s+0\s+data/m);
    expect(got.nbdstate.map).toMatch(/^\s*65536\s+196608\s+3\s+hole,zero/m);
  });

  it("flags as scripts get them: fua, may_trim, fast, req_one (comma-separated, in nbdkit's order)", async () => {
    const script = writeScript(dir, "flags.sh", String.raw`
case "$1" in
  config) printf '%s\n' "$3" > "$tmpdir/log" ;;
  get_size) echo 1M ;;
  can_write|can_flush|can_trim|can_zero|can_fast_zero|can_extents) exit 0 ;;
  can_fua) echo native ;;
  pwrite) cat >/dev/null; echo "pwrite $3 $4 [$5] $#" >> "$(cat "$tmpdir/log")" ;;
  zero|trim) echo "$1 $3 $4 [$5] $#" >> "$(cat "$tmpdir/log")" ;;
  extents) echo "extents $3 $4 [$5] $#" >> "$(cat "$tmpdir/log")"; echo "$4 $3" ;;
  flush) echo "flush $#" >> "$(cat "$tmpdir/log")" ;;
  pread) echo "pread $3 $4 $#" >> "$(cat "$tmpdir/log")"; dd if=/dev/zero count=$3 iflag=count_bytes status=none ;;
  *) exit 2 ;;
esac
`);
    const py = String.raw`
h = connect()
h.pwrite(b"a" * 512, 0)
h.pwrite(b"b" * 512, 512, nbd.CMD_FLAG_FUA)
h.zero(512, 1024)
h.zero(512, 1024, nbd.CMD_FLAG_NO_HOLE)
h.zero(512, 2048, nbd.CMD_FLAG_FUA | nbd.CMD_FLAG_FAST_ZERO)
h.trim(512, 4096, nbd.CMD_FLAG_FUA)
h.trim(512, 4096)
extents(h, 4096, 0)
extents(h, 4096, 0, nbd.CMD_FLAG_REQ_ONE)
h.flush()
h.pread(512, 8192)
print("OK")
`;
    const got = await each(["sh", script, `log=${join(dir, "flags")}`], async (s) => {
      const log = join(dir, "flags");
      writeFileSync(log, "");
      await pythonOk(py, s.uri);
      return readFileSync(log, "utf8").split("\n").filter(Boolean);
    });
    expect(got.nbdstate).toEqual(got.nbdkit);
    expect(got.nbdstate).toEqual(expect.arrayContaining([
      "pwrite 512 0 [] 5", "pwrite 512 512 [fua] 5", "zero 512 1024 [may_trim] 5", "zero 512 1024 [] 5",
      "zero 512 2048 [fua,may_trim,fast] 5", "trim 512 4096 [fua] 5", "trim 512 4096 [] 5",
      "extents 4096 0 [] 5", "extents 4096 0 [req_one] 5", "flush 2", "pread 512 8192 4",
    ]));
  });

  it("zero is emulated with pwrite when can_zero is false, and a fast zero then fails at once", async () => {
    const script = writeScript(dir, "nozero.sh", RAMDISK.replace("can_write|can_flush|can_trim|can_zero|can_fast_zero|can_multi_conn) exit 0 ;;", "can_write) exit 0 ;;\n  can_zero) exit 3 ;;"));
    const py = String.raw`
h = connect()
h.pwrite(b"\xff" * 65536, 0)
h.zero(20000, 1000)
eq(h.pread(65536, 0), b"\xff" * 1000 + bytes(20000) + b"\xff" * (65536 - 21000), "after zero")
expect_err(errno.ENOTSUP, h.zero, 512, 0, nbd.CMD_FLAG_FAST_ZERO)
print("OK")
`;
    const got = await each(["sh", script], async (s) => {
      const f = await flagsNoBlockSize(s.uri);
      await pythonOk(py, s.uri);
      return f;
    });
    expect(got.nbdstate).toEqual(got.nbdkit);
    expect(got.nbdstate).toMatchObject({ can_zero: true, can_fast_zero: true, can_trim: false, can_multi_conn: false });
  });

  it("block_size and can_cache/can_fua answers, is_rotational, can_multi_conn", async () => {
    const script = writeScript(dir, "caps.sh", String.raw`
case "$1" in
  get_size) echo 128K ;;
  block_size) echo 512 4K 1M ;;
  can_write|can_flush|is_rotational) exit 0 ;;
  can_multi_conn|can_trim) exit 3 ;;
  can_fua) echo emulate ;;
  can_cache) echo EMULATE ;;
  pread) dd if=/dev/zero count=$3 iflag=count_bytes status=none ;;
  pwrite) cat >/dev/null ;;
  *) exit 2 ;;
esac
`);
    const got = await each(["sh", script], (s) => flags(s.uri));
    expect(got.nbdstate).toEqual(got.nbdkit);
    expect(got.nbdstate).toMatchObject({
      block_size_minimum: 512, block_size_preferred: 4096, block_size_maximum: 1 << 20,
      is_rotational: true, can_multi_conn: false, can_trim: false, can_fua: true, can_cache: true,
    });
  });

  it("$tmpdir: an empty private directory for the whole run, removed at exit", async () => {
    const script = writeScript(dir, "tmpdir.sh", String.raw`
case "$1" in
  config) printf '%s' "$tmpdir" > "$3" ;;
  get_ready) echo ready > "$tmpdir/marker" ;;
  get_size) echo 1K ;;
  export_description) printf '%s' "$(ls -A "$tmpdir")" ;;
  pread) dd if=/dev/zero count=$3 iflag=count_bytes status=none ;;
  *) exit 2 ;;
esac
`);
    const got = await each(["sh", script, `where=${join(dir, "where")}`], async (s) => {
      const t = readFileSync(join(dir, "where"), "utf8");
      const during = existsSync(t);
      const list = JSON.parse((await runOk("nbdinfo", ["--json", s.uri])).stdout) as { exports: Array<{ description?: string }> };
      await s.stop();
      return { absolute: t.startsWith("/"), during, after: existsSync(t), listing: list.exports[0]!.description };
    });
    expect(got.nbdstate).toEqual(got.nbdkit);
    expect(got.nbdstate).toEqual({ absolute: true, during: true, after: false, listing: "marker" });
  });

  it("hostile export names and parameter values reach the script as plain argv entries (no shell injection)", async () => {
    const pwned = join(dir, "pwned");
    const victim = join(dir, "victim");
    const script = writeScript(dir, "hostile.sh", String.raw`
case "$1" in
  config) printf '%s' "$3" > "$tmpdir/param" ;;
  open) printf '%s' "$3" ;;
  get_size) echo 1K ;;
  export_description) printf 'export=%s param=%s' "$2" "$(cat "$tmpdir/param")" ;;
  pread) dd if=/dev/zero count=$3 iflag=count_bytes status=none ;;
  *) exit 2 ;;
esac
`);
    const param = `$(touch ${pwned}-param); rm -rf ${victim}`;
    const names = [`$(touch ${pwned})`, `; rm -rf ${victim}`, "`touch " + pwned + "`", "x' \"y\" | touch " + pwned, "-n", "a\tb\\c"];
    const got = await each(["sh", script, `p=${param}`], async (s) => {
      mkdirSync(victim, { recursive: true });
      const out: string[] = [];
      for (const n of names) {
        const j = JSON.parse((await runOk("nbdinfo", ["--json", s.uriFor(n)])).stdout) as { exports: Array<{ description: string }> };
        out.push(j.exports[0]!.description);
      }
      return out;
    });
    expect(got.nbdstate).toEqual(got.nbdkit);
    expect(got.nbdstate).toEqual(names.map((n) => `export=${n} param=${param}`));
    expect(existsSync(pwned)).toBe(false);
    expect(existsSync(`${pwned}-param`)).toBe(false);
    expect(existsSync(victim)).toBe(true);
  });
});

describe.skipIf(!ok)("sh plugin: thread models", () => {
  // pread records how many instances of the script run at once.
  const script = () =>
    writeScript(dir, "threads.sh", String.raw`
case "$1" in
  config) printf '%s\n' "$3" > "$tmpdir/model" ;;
  thread_model) [ -s "$tmpdir/model" ] && cat "$tmpdir/model" || exit 2 ;;
  get_size) echo 1M ;;
  pread)
    mkdir "$tmpdir/in.$$"
    ls -d "$tmpdir"/in.* | wc -l >> "$tmpdir/counts"
    sleep 0.1
    rmdir "$tmpdir/in.$$"
    dd if=/dev/zero count=$3 iflag=count_bytes status=none ;;
  export_description) sort -n "$tmpdir/counts" 2>/dev/null | tail -n 1 ;;
  *) exit 2 ;;
esac
`);
  /** Three reads at once on each of `conns` connections; then the most scripts seen at once. */
  const py = String.raw`
conns = int(EXTRA[0])
hs = [connect() for _ in range(conns)]
cookies = [(h, h.aio_pread(nbd.Buffer(512), 512 * i)) for h in hs for i in range(3)]
for h in hs:
    wait_all(h, [c for hh, c in cookies if hh is h])
for h in hs:
    h.shutdown()
h = nbd.NBD()
h.set_full_info(True)
h.connect_uri(URI)
print(h.get_export_description())
print("OK")
`;
  const most = async (args: string[], conns: number) =>
    each(["sh", script(), ...args], async (s) => Number((await pythonOk(py, s.uri, [String(conns)])).stdout.split("\n")[0]));

  it("without thread_model: serialize_all_requests, one script at a time across connections", async () => {
    expect(await most([], 2)).toEqual({ nbdkit: 1, nbdstate: 1 });
  });
  it("serialize_requests: one at a time per connection, connections side by side", async () => {
    const one = await most(["model=serialize_requests"], 1);
    expect(one).toEqual({ nbdkit: 1, nbdstate: 1 });
    const two = await most(["model=serialize_requests"], 2);
    expect(two.nbdkit).toBe(2);
    expect(two.nbdstate).toBe(2);
  });
  it("parallel: requests of one connection run scripts concurrently", async () => {
    const got = await most(["model=parallel"], 1);
    expect(got.nbdkit).toBeGreaterThan(1);
    expect(got.nbdstate).toBeGreaterThan(1);
  });
  it("serialize_connections: a second client waits until the first has gone", async () => {
    const py = String.raw`
import time
a = connect()
b = nbd.NBD()
b.aio_connect_uri(URI)
t = time.time() + 1.0
while time.time() < t and not b.aio_is_ready():
    b.poll(100)
eq(b.aio_is_ready(), False, "second client ready while the first is connected")
a.shutdown()
t = time.time() + 10
while time.time() < t and not b.aio_is_ready():
    b.poll(100)
eq(b.aio_is_ready(), True, "second client ready once the first has gone")
eq(len(b.pread(512, 0)), 512)
print("OK")
`;
    await each(["sh", script(), "model=serialize_connections"], (s) => pythonOk(py, s.uri));
  });
});

describe.skipIf(!ok)("sh plugin: configuration and the command line", () => {
  it("magic_config_key: a bare word after the script goes to the script's key; config receives key and value", async () => {
    const log = join(dir, "magic.log");
    const script = writeScript(dir, "magic.sh", String.raw`
echo "$@" >> "${log}"
case "$1" in
  magic_config_key) echo file ;;
  config) ;;
  dump_plugin) echo "script_says=hello" ;;
  *) exit 2 ;;
esac
`);
    const got: Record<string, string[]> = {};
    for (const kind of ["nbdkit", "nbdstate"] as const) {
      writeFileSync(log, "");
      const r = kind === "nbdkit" ? await run("nbdkit", ["sh", script, "disk.img", "a=b", "--dump-plugin"]) : await nbdstate(["sh", script, "disk.img", "a=b", "--dump-plugin"]);
      expect(r.code, r.stderr).toBe(0);
      // nbdkit 1.32 knows statuses up to 3; nbdstate those of nbdkit 1.34 (up to 8).
      expect(r.stdout).toMatch(kind === "nbdkit" ? /^max_known_status=3$/m : /^max_known_status=8$/m);
      expect(r.stdout.trimEnd().endsWith("script_says=hello")).toBe(true);
      got[kind] = readFileSync(log, "utf8").split("\n").filter((l) => l && l !== "thread_model");
    }
    expect(got.nbdstate).toEqual(got.nbdkit);
    expect(got.nbdstate).toEqual(["load", "magic_config_key", "config file disk.img", "config a b", "dump_plugin", "unload"]);
  });

  it("bad command lines fail with one clear line, exit status 1", async () => {
    const noConfig = writeScript(dir, "noconfig.sh", 'case "$1" in get_size) echo 1K ;; *) exit 2 ;; esac\n');
    const notExec = join(dir, "notexec.sh");
    writeFileSync(notExec, "#!/bin/sh\nexit 2\n");
    const failing = writeScript(dir, "failing.sh", 'case "$1" in config) echo "EINVAL bad value for $2" >&2; exit 1 ;; *) exit 2 ;; esac\n');
    const cases: Array<[string[], RegExp]> = [
      [["sh"], /missing script parameter/],
      [["sh", join(dir, "nope.sh")], /nope\.sh'?: No such file or directory/],
      [["sh", notExec], /is not executable/],
      [["sh", "a=b", noConfig], /first parameter must be script/],
      [["sh", noConfig, "extra"], /expecting key=value on the command line but got: extra/],
      [["sh", noConfig, "a=b"], /this plugin does not need command line configuration/],
      [["sh", failing, "size=big"], /failing\.sh: bad value for size/],
    ];
    for (const [args, re] of cases) {
      const r = await nbdstate(["-f", "-U", join(dir, "never.sock"), ...args]);
      expect(r.code, args.join(" ")).toBe(1);
      expect(r.stderr, args.join(" ")).toMatch(re);
      expect(r.stderr.trim().split("\n"), args.join(" ")).toHaveLength(1);
    }
  });

  it("bad script output: an unparsable size fails the client's open, and the server keeps serving", async () => {
    const script = writeScript(dir, "badsize.sh", String.raw`
case "$1" in
  get_size) [ "$2" = good ] && echo 1K || echo "lots" ;;
  open) printf '%s' "$3" ;;
  pread) dd if=/dev/zero count=$3 iflag=count_bytes status=none ;;
  *) exit 2 ;;
esac
`);
    const s = await serve("nbdstate", ["sh", script]);
    try {
      const bad = await run("nbdinfo", ["--size", s.uriFor("bad")]);
      expect(bad.code).not.toBe(0);
      const good = await runOk("nbdinfo", ["--size", s.uriFor("good")]);
      expect(good.stdout.trim()).toBe("1024");
    } finally {
      await s.stop();
    }
  });

  it("an inline script cannot come from stdin under -s (stdin is the client), in both", async () => {
    const py = String.raw`
for cmd in (["nbdkit", "-s", "sh", "-"], EXTRA + ["-s", "sh", "-"]):
    h = nbd.NBD()
    try:
        h.connect_command(cmd)
        raise AssertionError("%s served an inline script under -s" % cmd[0])
    except nbd.Error:
        pass
print("OK")
`;
    await pythonOk(py, "", [process.execPath, NBDSTATE_BIN]);
  });

  it("--help names the script parameter", async () => {
    const r = await nbdstate(["sh", "--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/script=<FILENAME>/);
  });
});

describe.skipIf(!ok)("sh plugin: exit statuses 4-8 (nbdkit 1.34; nbdstate only)", () => {
  const script = () =>
    writeScript(dir, "status.sh", String.raw`
case "$1" in
  get_size) echo 1M ;;
  pread)
    dd if=/dev/zero count=$3 iflag=count_bytes status=none
    case "$4" in
      4096) exit 4 ;;
      8192) echo 'EIO down we go' >&2; exit 5 ;;
      12288) exit 6 ;;
      16384) exit 7 ;;
      20480) exit 8 ;;
      24576) echo 'ENOSPC soft and failed' >&2; exit 8 ;;
    esac ;;
  *) exit 2 ;;
esac
`);

  it("6 drops the client at once, 7 answers then refuses further requests, 8 fails (ESHUTDOWN unless stderr says)", async () => {
    const s = await serve("nbdstate", ["sh", script()]);
    try {
      const py = String.raw`
h = connect()
try:
    h.pread(512, 12288)
    raise AssertionError("read answered after exit 6")
except nbd.Error as e:
    pass
assert not h.aio_is_ready(), "still connected after exit 6"
h = connect()
eq(len(h.pread(512, 16384)), 512, "exit 7 answers")
try:
    h.pread(512, 0)
    raise AssertionError("a request after exit 7 was served")
except nbd.Error:
    pass
h = connect()
expect_err(errno.ESHUTDOWN, h.pread, 512, 20480)
h = connect()
expect_err(errno.ENOSPC, h.pread, 512, 24576)
eq(len(connect().pread(512, 0)), 512, "other clients are served")
print("OK")
`;
      await pythonOk(py, s.uri);
      expect(s.exited).toBe(false);
    } finally {
      await s.stop();
    }
  });

  it("4 answers and shuts the server down; 5 fails the request and shuts down", async () => {
    for (const [off, want] of [[4096, "ok"], [8192, "EIO"]] as const) {
      const s = await serve("nbdstate", ["sh", script()]);
      try {
        const py = String.raw`
h = connect()
try:
    h.pread(512, int(EXTRA[0]))
    print("ok")
except nbd.Error as e:
    print(errno.errorcode[e.errnum])
print("OK")
`;
        const r = await runPython(py, s.uri, [String(off)]);
        expect(r.stdout.split("\n")[0]).toBe(want);
        expect(await waitFor(() => s.exited, 10_000)).toBe(true);
        expect(s.exitCode).toBe(0);
      } finally {
        await s.stop();
      }
    }
  });
});

