// openBeneath: symlinks and ".." may move around inside the directory but
// never out of it, with openat2 and with the component-by-component walk.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { closeSync, constants as C, fstatSync, mkdirSync, mkdtempSync, openSync, readSync, realpathSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openBeneath, canOpenBeneath } from "../../src/sys/beneath.js";

let root: string;
let dir: string;
let dirfd: number;

beforeAll(() => {
  root = realpathSync(mkdtempSync(join(tmpdir(), "nbdstate-beneath-")));
  dir = join(root, "d");
  mkdirSync(join(dir, "sub", "deeper"), { recursive: true });
  mkdirSync(join(root, "outside"));
  writeFileSync(join(dir, "file1"), "file1");
  writeFileSync(join(dir, "sub", "inner"), "inner");
  writeFileSync(join(root, "outside", "inner"), "OUTSIDE");
  writeFileSync(join(root, "secret"), "SECRET");
  symlinkSync("file1", join(dir, "alias"));
  symlinkSync("sub/inner", join(dir, "link2"));
  symlinkSync("sub/deeper/../inner", join(dir, "dotdot-inside"));
  symlinkSync("../sub/inner", join(dir, "sub", "up"));
  symlinkSync("sub/up", join(dir, "via-sub-up"));
  symlinkSync(join(dir, "file1"), join(dir, "abs-inside"));
  symlinkSync(join(dir, "sub"), join(dir, "abs-subdir"));
  symlinkSync("abs-subdir/inner", join(dir, "via-abs-subdir"));
  symlinkSync(join(root, "secret"), join(dir, "abs-outside"));
  symlinkSync("../secret", join(dir, "climb"));
  symlinkSync("../d/file1", join(dir, "climb-and-back"));
  symlinkSync(join(root, "outside"), join(dir, "outdir"));
  symlinkSync("outdir/inner", join(dir, "via-outdir"));
  symlinkSync("/proc/self/root/etc/hostname", join(dir, "magic"));
  symlinkSync("loop-b", join(dir, "loop-a"));
  symlinkSync("loop-a", join(dir, "loop-b"));
  symlinkSync("nowhere", join(dir, "dangling"));
  symlinkSync("file1/x", join(dir, "through-file"));
  symlinkSync(".", join(dir, "self"));
  dirfd = openSync(dir, C.O_RDONLY | C.O_DIRECTORY);
});
afterAll(() => {
  closeSync(dirfd);
  rmSync(root, { recursive: true, force: true });
});

function content(fd: number): string {
  const b = Buffer.alloc(64);
  const n = readSync(fd, b, 0, 64, 0);
  return b.toString("utf8", 0, n);
}

describe.skipIf(!canOpenBeneath())("openBeneath", () => {
  for (const walkOnly of [false, true]) {
    const how = walkOnly ? "walk" : "openat2 (or the walk where the kernel lacks it)";
    const open = (name: string) => openBeneath(dirfd, dir, name, C.O_RDONLY | C.O_NONBLOCK, { walkOnly });
    const code = (name: string) => {
      try {
        closeSync(open(name));
        return "opened";
      } catch (e) {
        return (e as NodeJS.ErrnoException).code;
      }
    };

    describe(how, () => {
      it("opens files and follows symlinks that stay inside", () => {
        const cases: Array<[string, string]> = [
          ["file1", "file1"],
          ["alias", "file1"],
          ["link2", "inner"],
          ["dotdot-inside", "inner"],
          ["via-sub-up", "inner"],
          ["abs-inside", "file1"],
          ["via-abs-subdir", "inner"],
        ];
        for (const [name, want] of cases) {
          const fd = open(name);
          try {
            expect(content(fd), name).toBe(want);
          } finally {
            closeSync(fd);
          }
        }
      });

      it("gives the very file it resolved (same inode)", () => {
        const fd = open("link2");
        try {
          expect(fstatSync(fd).ino).toBe(statSync(join(dir, "sub", "inner")).ino);
        } finally {
          closeSync(fd);
        }
      });

      it("refuses every way out with EXDEV, even one that comes back in", () => {
        for (const name of ["abs-outside", "climb", "climb-and-back", "via-outdir", "magic", "outdir"]) {
          expect(code(name), name).toBe("EXDEV");
        }
      });

      it("reports loops, dangling links, files used as directories and the directory itself", () => {
        expect(code("loop-a")).toBe("ELOOP");
        expect(code("dangling")).toBe("ENOENT");
        expect(code("nope")).toBe("ENOENT");
        expect(code("through-file")).toBe("ENOTDIR");
      });

      it("opens the directory itself only as a directory, never as a file to serve", () => {
        expect(() => openBeneath(dirfd, dir, "self", C.O_RDWR, { walkOnly })).toThrow(/EISDIR/);
        expect(() => openBeneath(dirfd, dir, "sub", C.O_RDWR, { walkOnly })).toThrow(/EISDIR/);
      });
    });
  }
});
