// ondemand plugin through the CLI: exports made on first use and listed by
// NBD_OPT_LIST (as nbdkit lists them), data kept across connections and
// restarts, export names that cannot leave dir=, nor reach a shell, the
// lock (refuse, or wait=true), one mkfs for simultaneous first opens, and
// a failed mkfs that leaves nothing behind (nbdkit leaves a half-made file).
import { existsSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeTmpDir, removeTmpDir, run, runOk } from "../helpers/server.js";
import { requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";
import { NbdClient } from "../../src/client/index.js";
import { copyToFile, info, nbdsh, runNbdstate, serve, withServer, type Served } from "./disk-helpers.js";

const ok = requireTools([TOOLS.nbdinfo, TOOLS.nbdcopy, TOOLS.nbdkit, ["dumpe2fs", "e2fsprogs"]]) && requirePythonLibnbd();

let root: string;
let n = 0;
/** A fresh exports directory. */
const fresh = () => {
  const d = join(root, `exports-${n++}`);
  mkdirSync(d);
  return d;
};
beforeAll(() => {
  if (ok) root = makeTmpDir("nbdstate-ondemand-");
});
afterAll(() => root && removeTmpDir(root));

async function listNames(s: Served): Promise<string[]> {
  const r = await runOk("nbdinfo", ["--list", "--json", s.uri]);
  return (JSON.parse(r.stdout) as { exports: { "export-name": string }[] }).exports.map((e) => e["export-name"]);
}

/** NBD_OPT_GO on `name` fails: the server's message. */
async function openError(s: Served, name: string): Promise<string> {
  const c = await NbdClient.connect({ path: s.sock });
  try {
    await c.go(name);
  } catch (err) {
    return (err as Error).message;
  } finally {
    await c.abort().catch(() => c.destroy());
  }
  throw new Error(`opening ${JSON.stringify(name)} should have failed`);
}

describe.skipIf(!ok)("ondemand plugin", () => {
  it("creates filesystems on first use and lists them as nbdkit does; flags match nbdkit's", async () => {
    const [d1, d2] = [fresh(), fresh()];
    const [ours, theirs] = await Promise.all([serve("nbdstate", ["ondemand", `dir=${d1}`, "4M"]), serve("nbdkit", ["ondemand", `dir=${d2}`, "4M"])]);
    try {
      for (const s of [ours, theirs]) {
        for (const name of ["foo", "bar", ""]) await runOk("nbdinfo", ["--size", s.uriFor(name)]);
      }
      expect((await listNames(ours)).sort()).toEqual((await listNames(theirs)).sort());
      expect(await listNames(ours)).toEqual(["default", "bar", "foo"]);
      expect(readdirSync(d1).sort()).toEqual(["bar", "default", "foo"]);
      expect(await info(ours.uriFor("foo"))).toEqual(await info(theirs.uriFor("foo")));
      const img = await copyToFile(ours.uriFor("foo"), root);
      expect((await runOk("dumpe2fs", ["-h", img])).stdout).toMatch(/Block count:\s+4096/);
    } finally {
      await Promise.all([ours.stop(), theirs.stop()]);
    }
  });

  it("a second connection (and a restarted server) sees what the first wrote", async () => {
    const d = fresh();
    const args = ["ondemand", `dir=${d}`, "size=4M", "type=ext2", "label=persist"];
    await withServer(args, async (s) => {
      await nbdsh(s.uriFor("mine"), "h.pwrite(b'written by the first' * 100, 3 << 20); h.flush()");
      expect((await nbdsh(s.uriFor("mine"), "print(bytes(h.pread(20, 3 << 20)).decode())")).trim()).toBe("written by the first");
    });
    await withServer(args, async (s) => {
      expect((await nbdsh(s.uriFor("mine"), "print(bytes(h.pread(20, 3 << 20)).decode())")).trim()).toBe("written by the first");
    });
    expect((await runOk("dumpe2fs", ["-h", join(d, "mine")])).stdout).toMatch(/Filesystem volume name:\s+persist/);
  });

  it("rejects export names that could leave dir= (or reach a shell); nothing is created", async () => {
    const d = fresh();
    const cmd = 'truncate -s $size "$disk"';
    await withServer(["ondemand", `dir=${d}`, "1M", `command=${cmd}`], async (s) => {
      for (const bad of ["../x", "a/b", "/etc/passwd", "a.b", "..", "x:y", "a".repeat(256), "tab\there"]) {
        expect(await openError(s, bad)).toMatch(/invalid export name .* rejected/);
      }
      // Shell syntax in a valid name is only ever a file name.
      for (const name of ["$(touch PWNED)", "`touch PWNED`", "x;touch PWNED", "a'b\"c"]) {
        await runOk("nbdinfo", ["--size", s.uriFor(name)]);
      }
      expect(s.exited).toBe(false);
    });
    expect(readdirSync(d).sort()).toEqual(["$(touch PWNED)", "`touch PWNED`", "a'b\"c", "x;touch PWNED"]);
    expect(existsSync(join(root, "x"))).toBe(false);
    expect(existsSync("PWNED")).toBe(false);
  });

  it("locks an export to one client; wait=true makes the second wait for the first to leave", async () => {
    const script = (uri: string) => [
      "import threading, time",
      `h2 = nbd.NBD()`,
      `try:\n  h2.connect_uri('${uri}'); print('second connected')\nexcept nbd.Error as e:\n  print('second refused')`,
    ].join("\n");
    await withServer(["ondemand", `dir=${fresh()}`, "1M"], async (s) => {
      expect((await nbdsh(s.uriFor("locked"), script(s.uriFor("locked")))).trim()).toBe("second refused");
      expect(s.stderr).toMatch(/"locked": filesystem is locked by another client/);
    });
    await withServer(["ondemand", `dir=${fresh()}`, "1M", "wait=true"], async (s) => {
      const code = [
        "import threading, time",
        "h2 = nbd.NBD()",
        `t = threading.Thread(target=lambda: h2.connect_uri('${s.uriFor("w")}'))`,
        "t.start(); time.sleep(1.0)",
        "print('waiting' if t.is_alive() else 'not waiting')",
        "h.shutdown(); t.join(10); print(h2.get_size())",
      ].join("\n");
      expect((await nbdsh(s.uriFor("w"), code)).trim().split("\n")).toEqual(["waiting", String(1 << 20)]);
    });
  });

  it("runs the command once when clients first open the same new name together", async () => {
    const d = fresh();
    const log = join(root, `runs-${n}`);
    const cmd = `echo run >> "$log"; sleep 0.5; truncate -s $size "$disk"`;
    await withServer(["ondemand", `dir=${d}`, "1M", "wait=true", `command=${cmd}`, `log=${log}`], async (s) => {
      const rs = await Promise.all([1, 2, 3].map(() => run("nbdinfo", ["--size", s.uriFor("same")])));
      expect(rs.map((r) => r.stdout.trim())).toEqual(["1048576", "1048576", "1048576"]);
    });
    expect(readFileSync(log, "utf8")).toBe("run\n");
  });

  it("a failed mkfs refuses the client with one line and leaves no export (nbdkit leaves an unformatted file)", async () => {
    const d = fresh();
    await withServer(["ondemand", `dir=${d}`, "1M", "type=nosuchfs"], async (s) => {
      expect(await openError(s, "broken")).toMatch(/ondemand: mkfs -t nosuchfs exited with code 1/);
      expect(s.stderr.trim().split("\n")).toHaveLength(1);
      // (nbdinfo --list would open "default", which fails the same way: list with NBD_OPT_LIST only.)
      const c = await NbdClient.connect({ path: s.sock });
      try {
        expect((await c.list()).map((e) => e.name)).toEqual([""]);
      } finally {
        await c.abort().catch(() => c.destroy());
      }
    });
    expect(readdirSync(d)).toEqual([]);
    const k = fresh();
    await withServer(["ondemand", `dir=${k}`, "1M", "type=nosuchfs"], async (s) => {
      expect((await run("nbdinfo", ["--size", s.uriFor("broken")])).code).not.toBe(0);
    }, "nbdkit");
    expect(readdirSync(k)).toEqual(["broken"]);
  });

  it("refuses bad command lines with one clear line", async () => {
    const cases: [string[], RegExp][] = [
      [["ondemand", "1M"], /ondemand: dir and size parameters are required/],
      [["ondemand", `dir=${root}`], /ondemand: dir and size parameters are required/],
      [["ondemand", "dir=/nonexistent/exports", "1M"], /ondemand: dir: \/nonexistent\/exports: ENOENT/],
      [["ondemand", `dir=${root}`, "1M", "wait=maybe"], /ondemand: wait: could not decipher boolean/],
      [["ondemand", `dir=${root}`, "1M", "disk=x"], /'disk' parameter cannot be set/],
    ];
    const results = await Promise.all(cases.map(([args]) => runNbdstate(["-f", "-U", join(root, "never.sock"), ...args])));
    results.forEach((r, i) => {
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(cases[i]![1]);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
    });
  });
});
