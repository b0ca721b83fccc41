import { describe, it, expect, beforeEach, afterEach } from "vitest";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync, symlinkSync, readFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import createFile from "../../src/plugins/file/index.js";
import { NbdError } from "../../src/backend/types.js";
import { NBD_EINVAL } from "../../src/protocol/constants.js";
import { configure, openPlugin, LIST } from "./helpers.js";

let root: string; // holds dir/ and files outside it
let dir: string;
let toClose: Array<() => unknown> = [];

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), "nbdstate-dir-"));
  dir = join(root, "exports");
  mkdirSync(dir);
  writeFileSync(join(dir, "file1"), Buffer.alloc(4096, 1));
  writeFileSync(join(dir, "file2"), Buffer.alloc(8192, 2));
  writeFileSync(join(root, "secret"), "outside");
});
afterEach(async () => {
  for (const c of toClose.splice(0)) await c();
  rmSync(root, { recursive: true, force: true });
});

async function dirPlugin() {
  const p = createFile();
  await configure(p, { dir });
  return p;
}

/** Open `name` and expect an NbdError(EINVAL) whose message matches `msg`. */
async function expectRefused(name: string, msg: RegExp) {
  const p = await dirPlugin();
  const err = await Promise.resolve()
    .then(() => p.open(false, name, false))
    .then((h) => {
      toClose.push(() => p.close!(h));
      return null;
    }, (e) => e);
  expect(err, `open(${JSON.stringify(name.slice(0, 40))}) should fail`).toBeInstanceOf(NbdError);
  expect((err as NbdError).errno).toBe(NBD_EINVAL);
  expect((err as NbdError).message).toMatch(msg);
}

describe("file plugin dir= mode: listing", () => {
  it("lists every regular file, sorted, with no descriptions", async () => {
    const p = await dirPlugin();
    expect(await p.listExports!(LIST)).toEqual([{ name: "file1" }, { name: "file2" }]);
  });

  it("re-reads the directory on every listing, so new files appear", async () => {
    const p = await dirPlugin();
    writeFileSync(join(dir, "file3"), "new");
    expect((await p.listExports!(LIST)).map((e) => e.name)).toEqual(["file1", "file2", "file3"]);
  });

  it("lists up to 10000 files, and fails the listing (not the server) for a directory with more", async () => {
    const p = await dirPlugin();
    for (let i = 0; i < 9998; i++) writeFileSync(join(dir, `f${i}`), "");
    expect(await p.listExports!(LIST)).toHaveLength(10000);
    writeFileSync(join(dir, "one-too-many"), "");
    await expect(Promise.resolve().then(() => p.listExports!(LIST))).rejects.toThrow(/more than 10000 files/);
  }, 60_000);

  it("leaves out subdirectories, FIFOs, dangling links and links leading outside", async () => {
    mkdirSync(join(dir, "subdir"));
    execFileSync("mkfifo", [join(dir, "fifo")]);
    symlinkSync(join(root, "nowhere"), join(dir, "dangling"));
    symlinkSync(join(root, "secret"), join(dir, "escape"));
    symlinkSync("file1", join(dir, "alias"));
    const p = await dirPlugin();
    expect((await p.listExports!(LIST)).map((e) => e.name)).toEqual(["alias", "file1", "file2"]);
  });

  it("has no default export", async () => {
    const p = await dirPlugin();
    expect(await p.defaultExport!(LIST)).toBeNull();
  });
});

describe("file plugin dir= mode: opening", () => {
  it("opens the file named by the export name", async () => {
    const p = await dirPlugin();
    const { h, ctx } = await openPlugin(p, false, "file2");
    toClose.push(() => p.close!(h));
    expect(await ctx.getSize()).toBe(8192);
    const b = Buffer.alloc(1);
    await ctx.pread(b, 100, 0);
    expect(b[0]).toBe(2);
    await ctx.pwrite(Buffer.from("W"), 0, 0);
    await ctx.flush(0);
    expect(readFileSync(join(dir, "file2"))[0]).toBe("W".charCodeAt(0));
  });

  it("follows a symlink that stays inside the directory", async () => {
    symlinkSync("file1", join(dir, "alias"));
    const p = await dirPlugin();
    const { h, ctx } = await openPlugin(p, true, "alias");
    toClose.push(() => p.close!(h));
    expect(await ctx.getSize()).toBe(4096);
  });

  it("refuses the empty (default) name", () => expectRefused("", /no default export/));
  it("refuses ../x", () => expectRefused("../secret", /'\/'|'\.\.'/));
  it("refuses .. and .", async () => {
    await expectRefused("..", /'\.\.'/);
    await expectRefused(".", /'\.\.' or is '\.'/);
  });
  it("refuses absolute paths like /etc/passwd", () => expectRefused("/etc/passwd", /contains '\/'/));
  it("refuses a/../../b", () => expectRefused("a/../../b", /contains '\/'/));
  it("refuses names containing '..' anywhere", () => expectRefused("x..y", /'\.\.'/));
  it("refuses names with NUL bytes", () => expectRefused("file1\0.txt", /NUL/));
  it("refuses names over 4096 bytes", () => expectRefused("a".repeat(4097), /longer than 4096 bytes/));
  it("refuses a name of 4096 bytes that does not exist as not found, not too long", () =>
    expectRefused("é".repeat(2048), /does not exist/));
  it("refuses a symlink pointing outside the directory", () => {
    symlinkSync(join(root, "secret"), join(dir, "escape"));
    return expectRefused("escape", /resolves outside/);
  });
  it("refuses a relative symlink climbing out of the directory", () => {
    symlinkSync("../secret", join(dir, "climb"));
    return expectRefused("climb", /resolves outside/);
  });
  it("refuses a symlink to the directory itself and to a subdirectory", async () => {
    symlinkSync(".", join(dir, "self"));
    mkdirSync(join(dir, "sub"));
    await expectRefused("self", /cannot be opened \(EISDIR\)|not a regular file/);
    await expectRefused("sub", /not a regular file|cannot be opened/);
  });
  it("refuses a name that does not exist", () => expectRefused("nope", /does not exist/));
  it("refuses a FIFO without blocking", async () => {
    execFileSync("mkfifo", [join(dir, "fifo")]);
    await expectRefused("fifo", /not a regular file/);
  });
  it("keeps messages short when names are long", async () => {
    const p = await dirPlugin();
    const err = await Promise.resolve(p.open(false, "z".repeat(5000), false)).catch((e) => e);
    expect((err as Error).message.length).toBeLessThan(200);
  });
});
