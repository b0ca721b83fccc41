// iso plugin through the CLI: the same size, flags and file listing as
// nbdkit for the same command line (the bytes hold timestamps, so they
// differ); directories merged; params= words (quotes, no shell); prog=;
// files read back with isoinfo and xorriso.
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeTmpDir, removeTmpDir, run, runOk } from "../helpers/server.js";
import { requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";
import { copyToFile, info, runNbdstate, withBoth, withServer } from "./disk-helpers.js";

const ok = requireTools([TOOLS.nbdinfo, TOOLS.nbdcopy, TOOLS.nbdkit, ["isoinfo", "genisoimage"], ["genisoimage", "genisoimage"], ["xorriso", "xorriso"]]) && requirePythonLibnbd();

let root: string;
let one: string;
let two: string;
const blob = randomBytes(150_000);
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

beforeAll(() => {
  if (!ok) return;
  root = makeTmpDir("nbdstate-iso-");
  one = join(root, "one");
  two = join(root, "two");
  mkdirSync(join(one, "docs"), { recursive: true });
  mkdirSync(join(two, "data"), { recursive: true });
  writeFileSync(join(one, "hello.txt"), "hello from one\n");
  writeFileSync(join(one, "docs", "a rather long name.md"), "# long\n");
  writeFileSync(join(two, "data", "blob.bin"), blob);
});
afterAll(() => root && removeTmpDir(root));

const listing = async (img: string) => (await runOk("isoinfo", ["-R", "-f", "-i", img])).stdout.trim().split("\n").sort();
const extract = async (img: string, path: string) => (await runOk("isoinfo", ["-R", "-x", path, "-i", img])).stdoutBuf;

describe.skipIf(!ok)("iso plugin", () => {
  it("merges directories; same size, flags and listing as nbdkit; files read back (isoinfo, xorriso)", async () => {
    await withBoth(["iso", one, `dir=${two}`, `params=-JrT -V "My Disk Image"`], async (ours, theirs) => {
      const [a, b] = await Promise.all([info(ours.uri), info(theirs.uri)]);
      expect(a).toEqual(b);
      expect(a).toMatchObject({ is_read_only: true, can_multi_conn: true, can_cache: true });
      const [mine, ref] = await Promise.all([copyToFile(ours.uri, root), copyToFile(theirs.uri, root)]);
      expect(await listing(mine)).toEqual(await listing(ref));
      expect(await listing(mine)).toEqual(expect.arrayContaining(["/hello.txt", "/docs/a rather long name.md", "/data/blob.bin"]));
      expect((await runOk("isoinfo", ["-d", "-i", mine])).stdout).toMatch(/Volume id: My Disk Image/);
      expect((await extract(mine, "/hello.txt")).toString()).toBe("hello from one\n");
      expect(sha(await extract(mine, "/data/blob.bin"))).toBe(sha(blob));
      // -J made a Joliet tree (long names without Rock Ridge).
      expect((await runOk("isoinfo", ["-J", "-f", "-i", mine])).stdout).toMatch(/a rather long name\.md/);
      const x = await runOk("xorriso", ["-indev", mine, "-osirrox", "on", "-extract", "/docs", join(root, "x-docs")]);
      expect(x.code).toBe(0);
      expect(existsSync(join(root, "x-docs", "a rather long name.md"))).toBe(true);
    });
  });

  it("prog=genisoimage runs genisoimage (nbdkit 1.32.5 passes it xorriso's '-as mkisofs' and fails)", async () => {
    await withServer(["iso", one, "prog=genisoimage", "params=-R"], async (s) => {
      const img = await copyToFile(s.uri, root);
      expect((await extract(img, "/hello.txt")).toString()).toBe("hello from one\n");
    });
    const r = await run("nbdkit", ["-U", join(root, "k.sock"), "iso", one, "prog=genisoimage", "params=-R", "--run", "true"], { timeoutMs: 30_000 });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/genisoimage: unrecognized option '-as'/);
  });

  it("params= is split into words without a shell: operators and $variables are refused, not run", async () => {
    const marker = join(root, "PWNED");
    const cases: [string, RegExp][] = [
      [`-R; touch ${marker}`, /iso: params: ';' is not supported \(no shell runs\)/],
      [`-R $(touch ${marker})`, /iso: params: .*(not supported|variables are not expanded)/],
      ["-V $HOME", /iso: params: \$HOME: variables are not expanded/],
      [`-R > ${marker}`, /iso: params: '>' is not supported/],
    ];
    const results = await Promise.all(cases.map(([p]) => runNbdstate(["-f", "-U", join(root, "never.sock"), "iso", one, `params=${p}`])));
    results.forEach((r, i) => {
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(cases[i]![1]);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
    });
    expect(existsSync(marker)).toBe(false);
    // A quoted ';' is just part of a word (here, the volume id).
    await withServer(["iso", one, `params=-V 'a;b'`], async (s) => {
      expect((await runOk("isoinfo", ["-d", "-i", await copyToFile(s.uri, root)])).stdout).toMatch(/Volume id: a;b/);
    });
  });

  it("refuses bad command lines and a failing ISO program with one clear line", async () => {
    const cases: [string[], RegExp][] = [
      [["iso"], /iso: you must supply the dir=<DIRECTORY> parameter/],
      [["iso", join(root, "missing")], /iso: dir: .*missing: ENOENT/],
      [["iso", one, "prog=/nonexistent/mkisofs"], /iso: cannot run \/nonexistent\/mkisofs: ENOENT/],
      [["iso", one, "params=--no-such-option"], /iso: xorriso exited with code \d+: /],
      [["iso", one, "size=1M"], /iso: unknown parameter 'size'/],
    ];
    const results = await Promise.all(cases.map(([args]) => runNbdstate(["-f", "-U", join(root, "never.sock"), ...args])));
    results.forEach((r, i) => {
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(cases[i]![1]);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
    });
  });
});

