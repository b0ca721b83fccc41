// The tar filter with real GNU tar archives (gnu and pax formats, long
// names), real clients, and hostile hand-made archives.
import { randomBytes } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, symlinkSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import createTar from "../../src/filters/tar/index.js";
import { scanTar, TarError } from "../../src/filters/tar/parse.js";
import createMemory from "../../src/plugins/memory/index.js";
import { PAGE_SIZE } from "../../src/plugins/memory/sparse.js";
import { isNbdkit, makeTmpDir, removeTmpDir, runOk, startServer } from "../helpers/server.js";
import {
  bufferContext, copyOut, expectContents, expectServing, insideTools, listError, listExports, mutations, openError, pwrite, pwriteFails,
  sha, writeTree,
} from "./inside-helpers.js";
import { archive, header, longName, member, pax } from "./tar-craft.js";
import { runningStack } from "../helpers/stack.js";

const ok = insideTools([["tar", "tar"]]);
const LONG = `${"d".repeat(120)}/long_name.bin`;
const files: Record<string, Buffer> = {
  "dir/f1": randomBytes(100_000),
  "dir/f2": randomBytes(3000),
  "dir/sub/f3": randomBytes(1),
  [LONG]: randomBytes(5000),
  "top.bin": randomBytes(70_001),
};
let root: string;
let src: string;
const tarOf = (name: string, ...opts: string[]) => {
  const out = join(root, name);
  return runOk("tar", [...opts, "-cf", out, "-C", src, "dir", "d".repeat(120), "top.bin"]).then(() => out);
};

beforeAll(async () => {
  if (!ok) return;
  root = makeTmpDir("nbdstate-tar-");
  src = join(root, "src");
  writeTree(src, files);
  symlinkSync("f1", join(src, "dir", "link")); // not a regular file: not listed
  mkdirSync(join(src, "dir", "empty"));
  await tarOf("gnu.tar");
  await tarOf("pax.tar", "--format=pax");
});
afterAll(() => root && removeTmpDir(root));

describe.skipIf(!ok)(`tar filter: tar-entry=PATH (${isNbdkit ? "nbdkit" : "nbdstate"})`, () => {
  // nbdkit 1.32.5 serves the wrong bytes for a GNU long name (the offset of
  // its L header, not of the member), so only nbdstate gets the long names.
  const cases = isNbdkit ? [["gnu.tar", "dir/f1"], ["pax.tar", "dir/f1"]] : [["gnu.tar", LONG], ["pax.tar", LONG], ["gnu.tar", "dir/f1"]];
  it.each(cases)("%s: serves %s", async (t, entry) => {
    if (entry === LONG) expect(entry.length).toBeGreaterThan(100); // a GNU L header / pax path
    const srv = await startServer(["-r", "--filter=tar", "file", join(root, t), `tar-entry=${entry}`]);
    try {
      expect(sha(await copyOut(srv, ""))).toBe(sha(files[entry]!));
    } finally {
      await srv.stop();
    }
  });
});

describe.skipIf(!ok || isNbdkit)("tar filter: tar-entry=exportname", () => {
  it.each(["gnu.tar", "pax.tar"])("%s: lists every regular file with its size; contents equal the originals", async (t) => {
    const tf = (await runOk("tar", ["tf", join(root, t)])).stdout.split("\n");
    const srv = await startServer(["-r", "--filter=tar", "file", join(root, t), "tar-entry=exportname"]);
    try {
      const list = await listExports(srv);
      expect(list.map((e) => e.name).sort()).toEqual(Object.keys(files).sort());
      for (const e of list) {
        expect(tf).toContain(e.name); // named as `tar tf` prints it
        expect(e.size).toBe(files[e.name]!.length);
        expect(e.description).toBe(`${files[e.name]!.length} bytes`);
      }
      await expectContents(srv, files);
      expect(await openError(srv, "dir/link")).toMatch(/no regular file 'dir\/link' in the archive/);
      expect(await openError(srv, "")).toMatch(/no default export/); // exportname mode has none
    } finally {
      await srv.stop();
    }
  });

  it("writes go in place and change exactly the right bytes (checked with tar xf)", async () => {
    const w = join(root, "w.tar");
    copyFileSync(join(root, "gnu.tar"), w);
    const before = readFileSync(w).length;
    const srv = await startServer(["--filter=tar", "file", w, "tar-entry=exportname"]);
    const want = Object.fromEntries(Object.entries(files).map(([k, v]) => [k, Buffer.from(v)]));
    try {
      const patches: [string, number, Buffer][] = [
        ["dir/f1", 0, Buffer.from("START")],
        ["dir/f1", 99_995, Buffer.from("-END-")],
        ["dir/f2", 1234, randomBytes(100)],
        [LONG, 4999, Buffer.from("Z")],
      ];
      for (const [name, off, data] of patches) {
        await pwrite(srv, name, off, data);
        data.copy(want[name]!, off);
      }
      // The size cannot change: a write past the member's end is refused.
      expect(await pwriteFails(srv, "dir/f2", 2999, Buffer.from("ab"))).toMatch(/ENOSPC|No space/);
      await expectContents(srv, { "dir/f1": want["dir/f1"]! });
    } finally {
      await srv.stop();
    }
    expect(readFileSync(w).length).toBe(before);
    const out = join(root, "extracted");
    mkdirSync(out);
    await runOk("tar", ["xf", w, "-C", out]);
    for (const [name, data] of Object.entries(want)) expect(sha(readFileSync(join(out, name))), name).toBe(sha(data));
  });

  it("-r serves read-only: writes fail and the archive is unchanged", async () => {
    const t = join(root, "gnu.tar");
    const h = sha(readFileSync(t));
    const srv = await startServer(["-r", "--filter=tar", "file", t, "tar-entry=exportname"]);
    try {
      expect(await pwriteFails(srv, "dir/f2", 0, Buffer.from("x"))).toMatch(/EPERM|not permitted|read-only/i);
    } finally {
      await srv.stop();
    }
    expect(sha(readFileSync(t))).toBe(h);
  });

  it("tar-limit caps the headers read", async () => {
    const t = join(root, "ordered.tar");
    await runOk("tar", ["-cf", t, "-C", src, "top.bin", "dir/f2", "dir/f1"]);
    const srv = await startServer(["-r", "--filter=tar", "file", t, "tar-entry=exportname", "tar-limit=2"]);
    try {
      expect((await listExports(srv)).map((e) => e.name)).toEqual(["top.bin", "dir/f2"]);
      expect(await openError(srv, "dir/f1")).toMatch(/only the first 2 headers were read: see tar-limit/);
    } finally {
      await srv.stop();
    }
  });

  it("cartesian: below `file dir=DIR`, exports are OUTER:INNER; a non-archive is left out", async () => {
    const d = join(root, "exports");
    mkdirSync(d);
    copyFileSync(join(root, "gnu.tar"), join(d, "a.tar"));
    const b = { "x/y.bin": randomBytes(20_000), "z:colon": randomBytes(600) };
    writeTree(join(root, "bsrc"), b);
    await runOk("tar", ["--format=pax", "-cf", join(d, "b.tar"), "-C", join(root, "bsrc"), "x", "z:colon"]);
    writeFileSync(join(d, "c.txt"), "not an archive, and not a multiple of 512 bytes");
    const srv = await startServer(["-r", "--filter=tar", "file", `dir=${d}`, "tar-entry=exportname"]);
    try {
      const want: Record<string, Buffer> = {};
      for (const [k, v] of Object.entries(files)) want[`a.tar:${k}`] = v;
      for (const [k, v] of Object.entries(b)) want[`b.tar:${k}`] = v;
      expect((await listExports(srv)).map((e) => e.name).sort()).toEqual(Object.keys(want).sort());
      await expectContents(srv, want);
      expect(await openError(srv, "dir/f1")).toMatch(/names are OUTER:INNER/);
      expect(await openError(srv, "c.txt:anything")).toMatch(/tar: /);
    } finally {
      await srv.stop();
    }
  });
});

describe.skipIf(!ok || isNbdkit)("tar filter: hostile and corrupt archives", () => {
  const good = randomBytes(1500);
  const hostile = () =>
    archive(
      member("ok.txt", good),
      member("/etc/passwd", "absolute"),
      member("../escape", "dotdot"),
      member("a/../../b", "dotdot2"),
      pax({ path: Buffer.from("nul\0inside") }),
      member("placeholder1", "nul in a pax path"),
      pax({ path: "p".repeat(5000) }),
      member("placeholder2", "pax path too long"),
      longName("l".repeat(5000)),
      member("placeholder3", "GNU long name too long"),
      member(Buffer.from([0x66, 0xff, 0xfe]), "not utf-8"),
      member("name", "prefixed", { prefix: "pre/fix" }),
      member("dir/", "", { type: "5" }),
      member("hard", "", { type: "1" }),
    );

  it("unsafe names are never listed nor served; the rest is", async () => {
    const t = join(root, "hostile.tar");
    writeFileSync(t, hostile());
    const srv = await startServer(["-r", "--filter=tar", "file", t, "tar-entry=exportname"]);
    try {
      expect((await listExports(srv)).map((e) => e.name)).toEqual(["ok.txt", "pre/fix/name"]);
      await expectContents(srv, { "ok.txt": good, "pre/fix/name": Buffer.from("prefixed") });
      expect(await openError(srv, "/etc/passwd")).toMatch(/'\/etc\/passwd' is not served: absolute name/);
      expect(await openError(srv, "../escape")).toMatch(/not served: name contains '\.\.'/);
      expect(await openError(srv, "hard")).toMatch(/no regular file 'hard'/);
    } finally {
      await srv.stop();
    }
    const fixed = await startServer(["-r", "--filter=tar", "file", t, "tar-entry=a/../../b"]);
    try {
      expect(await openError(fixed, "")).toMatch(/not served: name contains '\.\.'/);
    } finally {
      await fixed.stop();
    }
  });

  it("sparse members (GNU and pax formats) are refused with a clear error", async () => {
    const s = join(root, "ssrc");
    mkdirSync(s);
    writeFileSync(join(s, "sparse.img"), "");
    truncateSync(join(s, "sparse.img"), 1 << 20);
    writeFileSync(join(s, "plain"), "plain");
    const fd = readFileSync(join(s, "sparse.img"));
    Buffer.from("data").copy(fd, 512 * 1024);
    writeFileSync(join(s, "sparse.img"), fd);
    await runOk("cp", ["--sparse=always", join(s, "sparse.img"), join(s, "holey.img")]);
    for (const fmt of ["gnu", "pax"]) {
      const t = join(root, `sparse-${fmt}.tar`);
      await runOk("tar", [`--format=${fmt}`, "--sparse", "-cf", t, "-C", s, "holey.img", "plain"]);
      const srv = await startServer(["-r", "--filter=tar", "file", t, "tar-entry=exportname"]);
      try {
        expect((await listExports(srv)).map((e) => e.name)).toEqual(["plain"]);
        expect(await openError(srv, "holey.img")).toMatch(/'holey.img' is a sparse member/);
        await expectServing(srv, "plain", Buffer.from("plain"));
      } finally {
        await srv.stop();
      }
    }
  });

  it.each([
    ["a bad header checksum", () => archive(member("a", "x"), member("b", "y", { badChecksum: true })), /bad header checksum at offset 1024/],
    ["a member running past the end", () => member("a", "x".repeat(3000)).subarray(0, 2048), /truncated archive/],
    ["a huge octal size", () => archive(header("a", 0, { sizeField: Buffer.from("77777777777\0") })), /truncated archive/],
    ["a huge base-256 size", () => archive(header("a", 0, { sizeField: Buffer.from([0x80, ...Array(11).fill(0xff)]) })), /size too large/],
    ["a size that is not octal", () => archive(header("a", 0, { sizeField: Buffer.from("12x4\0") })), /size is not an octal number/],
    ["a bad pax record", () => archive(member("h", "99 path=x\n", { type: "x" }), member("a", "x")), /corrupt pax header/],
  ])("%s: a clear error, and the server keeps serving", async (_what, make, msg) => {
    const d = join(root, `corrupt-${randomBytes(4).toString("hex")}`);
    mkdirSync(d);
    writeFileSync(join(d, "bad.tar"), make());
    writeFileSync(join(d, "good.tar"), archive(member("ok.txt", good)));
    const single = await startServer(["-r", "--filter=tar", "file", join(d, "bad.tar"), "tar-entry=exportname"]);
    try {
      expect(await listError(single)).toMatch(msg);
      expect(await listError(single)).toMatch(msg); // still there, still answering
    } finally {
      await single.stop();
    }
    const srv = await startServer(["-r", "--filter=tar", "file", `dir=${d}`, "tar-entry=exportname"]);
    try {
      expect((await listExports(srv)).map((e) => e.name)).toEqual(["good.tar:ok.txt"]);
      expect(await openError(srv, "bad.tar:a")).toMatch(msg);
      await expectServing(srv, "good.tar:ok.txt", good);
    } finally {
      await srv.stop();
    }
  });
});

describe.skipIf(!ok)("tar filter: the header parser on damaged archives", () => {
  it("2000 randomly damaged GNU and pax archives: an index or a TarError, never anything else", async () => {
    for (const t of ["gnu.tar", "pax.tar"]) {
      const base = readFileSync(join(root, t)).subarray(0, 64 * 1024);
      for (const b of mutations(base, 1000, 8, 0, 8192)) {
        await scanTar(bufferContext(b), 0).catch((err) => void expect(err).toBeInstanceOf(TarError));
      }
    }
  });
});

describe("tar filter: block status is the member's, shifted and clipped", () => {
  it("holes below inside the member are reported at the member's offsets", async () => {
    const mem = createMemory();
    const stack = await runningStack(mem, [createTar()], [["size", "1M"], ["tar-entry", "exportname"]]);
    // "pad" puts the next header at PAGE_SIZE - 512, so "holey"'s data starts at a page.
    const data = Buffer.alloc(4 * PAGE_SIZE);
    data.fill(1, 0, PAGE_SIZE);
    data.fill(2, 3 * PAGE_SIZE);
    const tar = archive(member("pad", Buffer.alloc(PAGE_SIZE - 1024, 7)), member("holey", data));
    const raw = await stack.layers[1]!.asLower().open({ exportName: "" });
    for (let off = 0; off < tar.length; off += PAGE_SIZE) {
      const chunk = tar.subarray(off, off + PAGE_SIZE);
      if (chunk.some((c) => c !== 0)) await raw.pwrite(chunk, off, 0); // zero pages stay holes
    }
    await stack.layers[1]!.asLower().close(raw);
    const o = await stack.open(true, "holey", false);
    try {
      expect(await o.ctx.getSize()).toBe(4 * PAGE_SIZE);
      expect(await o.ctx.extents(4 * PAGE_SIZE, 0, 0)).toEqual([
        { length: PAGE_SIZE, type: 0 },
        { length: 2 * PAGE_SIZE, type: 3 },
        { length: PAGE_SIZE, type: 0 },
      ]);
      expect(await o.ctx.extents(PAGE_SIZE, 3 * PAGE_SIZE, 0)).toEqual([{ length: PAGE_SIZE, type: 0 }]);
    } finally {
      await stack.close(o);
      await stack.unload();
    }
  });
});
