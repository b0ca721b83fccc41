// The package as a user gets it: `npm pack` this tree, install the tarball
// in a scratch project, write the plugin and tsconfig.json from README.md's
// "Writing a plugin" alone, build them with the installed TypeScript
// against the installed types, serve the result with the installed CLI,
// and read it with nbdcopy. The examples/ are checked and served from the
// repository (they import "nbdstate" too).
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { makeTmpDir, NBDSTATE_BIN, REPO_ROOT, run, runOk } from "../helpers/server.js";
import { requireTools, TOOLS } from "../helpers/tools.js";

const ok = requireTools([TOOLS.nbdcopy, TOOLS.nbdinfo]);
const NPM = "npm";

/** The fenced code blocks of README.md's "## Writing a plugin" section, by language. */
function readmeBlocks(): Record<string, string> {
  const readme = readFileSync(join(REPO_ROOT, "README.md"), "utf8");
  const start = readme.indexOf("\n## Writing a plugin\n");
  expect(start, "README.md has a '## Writing a plugin' section").toBeGreaterThan(0);
  const end = readme.indexOf("\n## ", start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  const blocks: Record<string, string> = {};
  for (const m of section.matchAll(/```(\w+)\n([\s\S]*?)```/g)) blocks[m[1]!] ??= m[2]!;
  return blocks;
}

const pkg = JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as {
  version: string;
  devDependencies: Record<string, string>;
};

describe.skipIf(!ok)("the nbdstate package in a project of one's own", () => {
  let proj = "";
  beforeAll(async () => {
    const tmp = makeTmpDir("nbdstate-pkg-");
    // --ignore-scripts: dist/ is already built (the tests run after tsc), and prepare would rebuild it.
    await runOk(NPM, ["pack", "--ignore-scripts", "--silent", "--pack-destination", tmp], { cwd: REPO_ROOT, timeoutMs: 60_000 });
    const tarball = join(tmp, `nbdstate-${pkg.version}.tgz`);
    expect(existsSync(tarball)).toBe(true);
    proj = join(tmp, "proj");
    mkdirSync(proj);
    writeFileSync(join(proj, "package.json"), JSON.stringify({ name: "proj", private: true, type: "module" }));
    await runOk(
      NPM,
      ["install", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error", tarball,
        `typescript@${pkg.devDependencies.typescript}`, `@types/node@${pkg.devDependencies["@types/node"]}`],
      { cwd: proj, timeoutMs: 110_000 },
    );
  }, 180_000);

  it("import { NbdError, NBD_EIO, FLAG_FUA, definePlugin } from \"nbdstate\" works in plain Node", async () => {
    writeFileSync(
      join(proj, "probe.mjs"),
      `import { NbdError, NBD_EIO, NBD_ENOSPC, FLAG_FUA, definePlugin, defineFilter, parseSize } from "nbdstate";
const e = new NbdError(NBD_ENOSPC, "full");
const p = definePlugin({ name: "x" });
console.log(JSON.stringify([e instanceof Error, e.errno, NBD_EIO, FLAG_FUA, p.name, typeof defineFilter, parseSize("1M")]));
`,
    );
    const r = await runOk(process.execPath, ["probe.mjs"], { cwd: proj });
    expect(JSON.parse(r.stdout)).toEqual([true, 28, 5, 2, "x", "function", 1048576]);
  });

  it("the README's plugin builds with tsc against the installed types, and nbdcopy reads what it serves", async () => {
    const blocks = readmeBlocks();
    expect(Object.keys(blocks).sort()).toEqual(["json", "ts"]);
    writeFileSync(join(proj, "my-plugin.ts"), blocks.ts!);
    writeFileSync(join(proj, "tsconfig.json"), blocks.json!);
    const tsc = await run(join(proj, "node_modules", ".bin", "tsc"), [], { cwd: proj, timeoutMs: 60_000 });
    expect(tsc.stdout + tsc.stderr).toBe("");
    expect(tsc.code).toBe(0);
    expect(existsSync(join(proj, "my-plugin.js"))).toBe(true);

    const nbdstate = join(proj, "node_modules", ".bin", "nbdstate");
    const out = join(proj, "out.img");
    const r = await run(nbdstate, ["-U", "-", "--run", `nbdcopy "nbd+unix:///4K?socket=$unixsocket" ${out}`, "./my-plugin.js", "byte=7"], {
      cwd: proj,
      timeoutMs: 30_000,
    });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(readFileSync(out)).toEqual(Buffer.alloc(4096, 7));
    // The default export "" is 1M, and a bad size is the client's error, not the server's end.
    const size = await run(nbdstate, ["-U", "-", "--run", "nbdinfo --size $uri", "./my-plugin.ts"], { cwd: proj, timeoutMs: 30_000 });
    expect(size.stdout.trim()).toBe("1048576");
  });

  it("nbdstate --check runs the installed TypeScript on the plugin: the README's passes, a wrong one fails", async () => {
    const nbdstate = join(proj, "node_modules", ".bin", "nbdstate");
    const good = await run(nbdstate, ["--check", "./my-plugin.ts"], { cwd: proj, timeoutMs: 60_000 });
    expect([good.code, good.stdout]).toEqual([0, "./my-plugin.ts: no type errors, loads as plugin 'filled'\n"]);
    writeFileSync(
      join(proj, "wrong.ts"),
      `import { definePlugin } from "nbdstate";
export default definePlugin({ name: "wrong", open: () => ({}), getSize: () => "big", pread(_h, buf) { buf.fill(0); } });
`,
    );
    const bad = await run(nbdstate, ["--check", "./wrong.ts"], { cwd: proj, timeoutMs: 60_000 });
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(/^wrong\.ts\(2,\d+\): error TS\d+/m);
    expect(bad.stdout).toContain("./wrong.ts: type errors, loads as plugin 'wrong'");
  });
});

describe.skipIf(!ok)("examples/", () => {
  const cli = (args: string[]) => run(process.execPath, [NBDSTATE_BIN, ...args], { timeoutMs: 60_000, cwd: REPO_ROOT });

  for (const file of ["examples/ramdisk.ts", "examples/ramdisk.mjs"]) {
    it(`${file}: type-checks, and serves what nbdcopy writes back to nbdcopy`, async () => {
      const check = await cli(["--check", file]);
      expect([check.code, check.stdout]).toEqual([0, `${file}: no type errors, loads as plugin 'ramdisk'\n`]);
      const dir = makeTmpDir();
      const src = join(dir, "src.img");
      const back = join(dir, "back.img");
      const data = Buffer.alloc(256 * 1024);
      for (let i = 0; i < data.length; i++) data[i] = (i * 7 + 3) & 0xff;
      writeFileSync(src, data);
      const r = await cli(["-U", "-", "--run", `nbdcopy ${src} $uri && nbdcopy $uri ${back}`, file, "256K"]);
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      expect(readFileSync(back)).toEqual(data);
    });
  }

  for (const file of ["examples/invert.ts", "examples/invert.mjs"]) {
    it(`${file}: type-checks; over the pattern plugin every byte reads inverted`, async () => {
      const check = await cli(["--check", `--filter=${file}`, "pattern"]);
      expect([check.code, check.stdout]).toEqual([0, `${file}: no type errors, loads as filter 'invert'\n`]);
      const out = join(makeTmpDir(), "out.img");
      const r = await cli(["-U", "-", "--run", `nbdcopy $uri ${out}`, `--filter=${file}`, "pattern", "size=64K"]);
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      const got = readFileSync(out);
      const want = Buffer.alloc(64 * 1024);
      for (let off = 0; off < want.length; off += 8) want.writeBigUInt64BE(BigInt(off), off);
      for (let i = 0; i < want.length; i++) want[i] = want[i]! ^ 0xff;
      expect(got.equals(want)).toBe(true);
    });
  }

  it("a module with a named export but no default says so", async () => {
    const file = join(makeTmpDir(), "x.mjs");
    writeFileSync(file, `export const plugin = { name: "x" };\n`);
    const r = await cli(["-f", "-U", join(makeTmpDir(), "s.sock"), file]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(
      `nbdstate: error: ${file} has no default export; export default a Plugin object or a factory function returning one (it exports only: plugin)`,
    );
  });
});
