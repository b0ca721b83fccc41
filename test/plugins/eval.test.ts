// The eval plugin as a user runs it: shell fragments on the command line
// (get_size='echo 64M' pread='dd ...'), the same command line served by
// nbdkit and nbdstate, compared with real clients (nbdinfo --json,
// nbdcopy, python3-libnbd): sizes, flags (including the can_* answers eval
// implies from the data methods given), errors and every byte.
import { createHash } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NBDSTATE_BIN, run, runOk } from "../helpers/server.js";
import { pythonOk } from "../helpers/python.js";
import { requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";
import { each, flagsNoBlockSize, makeTmpDir, removeTmpDir } from "./script-servers.js";

const ok = requireTools([TOOLS.nbdkit, TOOLS.nbdinfo, TOOLS.nbdcopy]) && requirePythonLibnbd();

let dir: string;
beforeAll(() => {
  dir = makeTmpDir("nbdstate-eval-test-");
});
afterAll(() => dir && removeTmpDir(dir));

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const ZEROS = "dd if=/dev/zero count=$3 iflag=count_bytes status=none";

describe.skipIf(!ok)("eval plugin: the same command line under nbdkit and nbdstate", () => {
  it("the man page's 64M read-only disk of zeros", async () => {
    const py = String.raw`
h = connect()
eq(h.pread(65536, 0), bytes(65536), "start")
eq(h.pread(4096, h.get_size() - 4096), bytes(4096), "end")
expect_err(errno.EPERM, h.pwrite, b"x", 0)
print("OK")
`;
    const got = await each(["eval", "get_size= echo 64M ", "pread= dd if=/dev/zero count=$3 iflag=count_bytes "], async (s) => {
      await pythonOk(py, s.uri);
      return flagsNoBlockSize(s.uri);
    });
    expect(got.nbdstate).toEqual(got.nbdkit);
    expect(got.nbdstate).toMatchObject({ "export-size": 64 << 20, is_read_only: true, can_zero: false, can_flush: false, can_trim: false });
  });

  it("the man page's file plugin equivalent: config= links file=, writes land in the file", async () => {
    const src = join(dir, "src.img");
    const data = Buffer.alloc(1 << 20);
    for (let i = 0; i < data.length; i++) data[i] = (i * 13 + (i >> 9)) & 0xff;
    writeFileSync(src, data);
    const got = await each(
      [
        "eval",
        `config=ln -sf "$(realpath "$3")" $tmpdir/file`,
        "get_size=stat -Lc %s $tmpdir/file",
        "pread=dd if=$tmpdir/file skip=$4 count=$3 iflag=count_bytes,skip_bytes",
        "pwrite=dd of=$tmpdir/file seek=$4 conv=notrunc oflag=seek_bytes",
        `file=${join(dir, "disk.img")}`,
      ],
      async (s) => {
        writeFileSync(join(dir, "disk.img"), Buffer.alloc(1 << 20));
        const f = await flagsNoBlockSize(s.uri);
        await runOk("nbdcopy", [src, s.uri]);
        const disk = sha(readFileSync(join(dir, "disk.img")));
        const out = join(dir, `out-${s.kind}.img`);
        await runOk("nbdcopy", [s.uri, out]);
        return { f, disk, out: sha(readFileSync(out)) };
      },
    );
    expect(got.nbdstate).toEqual(got.nbdkit);
    expect(got.nbdstate.disk).toBe(sha(data));
    expect(got.nbdstate.out).toBe(sha(data));
    // pwrite= implies can_write; zero is emulated with pwrite.
    expect(got.nbdstate.f).toMatchObject({ is_read_only: false, can_zero: true, can_flush: false, can_trim: false });
  });

  it("a data method implies its can_* answer unless the can_* is given", async () => {
    const got = await each(
      [
        "eval", "get_size=echo 1M", `pread=${ZEROS}`, "pwrite=cat >/dev/null", "flush=:", "trim=:", "zero=:",
        "extents=echo $4 $3 hole,zero", "cache=:", "can_trim=exit 3",
      ],
      async (s) => {
        const py = String.raw`
h = connect()
eq(extents(h, 4096, 8192), [(8192, 4096, 3)], "extents")
h.cache(4096, 0)
h.zero(4096, 0)
h.flush()
print("OK")
`;
        await pythonOk(py, s.uri);
        return flagsNoBlockSize(s.uri);
      },
    );
    expect(got.nbdstate).toEqual(got.nbdkit);
    expect(got.nbdstate).toMatchObject({ is_read_only: false, can_flush: true, can_fua: true, can_zero: true, can_cache: true, can_trim: false });
  });

  it("missing= is run for every method not given, with the method name as $1", async () => {
    const log = join(dir, "missing.log");
    const missing = `echo "$1" >> ${log}; case "$1" in can_write|can_multi_conn) exit 0 ;; get_size) echo 8K ;; *) exit 2 ;; esac`;
    const got = await each(["eval", `missing=${missing}`, `pread=${ZEROS}`, "pwrite=cat >/dev/null"], async (s) => {
      writeFileSync(log, "");
      const f = await flagsNoBlockSize(s.uri);
      return { f, called: [...new Set(readFileSync(log, "utf8").split("\n").filter(Boolean))].sort() };
    });
    expect(got.nbdstate.f).toEqual(got.nbdkit.f);
    expect(got.nbdstate.f).toMatchObject({ "export-size": 8192, is_read_only: false, can_multi_conn: true });
    // Each server asks its own set of questions in its own order; these come from both.
    for (const m of ["get_size", "can_multi_conn", "can_fua", "open"]) {
      expect(got.nbdkit.called).toContain(m);
      expect(got.nbdstate.called).toContain(m);
    }
    expect(got.nbdstate.called).not.toContain("pread");
    expect(got.nbdstate.called).not.toContain("can_write");
  });

  it("fragments run as $tmpdir/METHOD with nbdkit's arguments; hostile export names stay data", async () => {
    const pwned = join(dir, "pwned");
    const names = [`$(touch ${pwned})`, `'; touch ${pwned}; '`, "plain"];
    const got = await each(
      ["eval", "get_size=echo 1K", `pread=${ZEROS}`, `open=printf %s "$3"`, `export_description=printf '%s|%s|%s|%s' "$(basename "$0")" "$1" "$2" "$#"`],
      async (s) => {
        const out: string[] = [];
        for (const n of names) {
          const j = JSON.parse((await runOk("nbdinfo", ["--json", s.uriFor(n)])).stdout) as { exports: Array<{ description: string }> };
          out.push(j.exports[0]!.description);
        }
        return out;
      },
    );
    expect(got.nbdstate).toEqual(got.nbdkit);
    expect(got.nbdstate).toEqual(names.map((n) => `export_description|export_description|${n}|2`));
    expect(existsSync(pwned)).toBe(false);
  });

  it("an error fragment: 'echo EPERM x >&2; exit 1' is EPERM in both", async () => {
    const py = String.raw`
h = connect()
expect_err(errno.EPERM, h.pread, 512, 0)
expect_err(errno.ENOSPC, h.pwrite, b"x" * 512, 0)
print("OK")
`;
    await each(
      ["eval", "get_size=echo 1M", "pread=echo EPERM x >&2; exit 1", "pwrite=cat >/dev/null; echo 'ENOSPC full up' >&2; exit 1"],
      (s) => pythonOk(py, s.uri),
    );
  });

  it("preconnect gets the read-only flag and may refuse the client", async () => {
    const got = await each(
      ["-r", "eval", "get_size=echo 1K", `pread=${ZEROS}`, `preconnect=[ "$2" = true ] && { echo "EPERM read-only clients are not welcome" >&2; exit 1; }; exit 0`],
      async (s) => (await run("nbdinfo", ["--size", s.uri])).code,
    );
    expect(got.nbdkit).not.toBe(0);
    expect(got.nbdstate).not.toBe(0);
    const open = await each(["eval", "get_size=echo 1K", `pread=${ZEROS}`, `preconnect=[ "$2" = false ] || exit 1`], async (s) =>
      (await runOk("nbdinfo", ["--size", s.uri])).stdout.trim(),
    );
    expect(open).toEqual({ nbdkit: "1024", nbdstate: "1024" });
  });

  it("other keys go to the config fragment; without one they are an error, as is a method given twice", async () => {
    const log = join(dir, "config.log");
    writeFileSync(log, "");
    const got = await each(["eval", `config=echo "$2=$3" >> ${log}`, "get_size=echo 1K", `pread=${ZEROS}`, "color=blue", "x=a b"], async (s) =>
      (await runOk("nbdinfo", ["--size", s.uri])).stdout.trim(),
    );
    expect(got).toEqual({ nbdkit: "1024", nbdstate: "1024" });
    expect(readFileSync(log, "utf8")).toBe("color=blue\nx=a b\n".repeat(2));

    for (const [args, re] of [
      [["get_size=echo 1K", `pread=${ZEROS}`, "color=blue"], /callback 'color' is unknown, and there is no 'config' callback to handle it/],
      [["get_size=echo 1K", "get_size=echo 2K", `pread=${ZEROS}`], /method get_size defined more than once/],
    ] as const) {
      const kit = await run("nbdkit", ["-f", "-U", join(dir, "never.sock"), "eval", ...args]);
      const state = await run(process.execPath, [NBDSTATE_BIN, "-f", "-U", join(dir, "never.sock"), "eval", ...args]);
      expect(kit.code).toBe(1);
      expect(state.code).toBe(1);
      expect(kit.stderr).toMatch(re);
      expect(state.stderr).toMatch(re);
      expect(state.stderr.trim().split("\n")).toHaveLength(1);
    }
  });
});
