// The libc calls behind the file plugin: posix_fadvise reaches the kernel
// (0 on a file, EBADF on a closed fd), SEEK_DATA/SEEK_HOLE runs, errors
// named as Node names them.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { closeSync, mkdtempSync, openSync, rmSync, truncateSync, writeFileSync, writeSync } from "node:fs";
import { constants } from "node:os";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { canFadvise, fadvise, fadviseAsync, FADV } from "../../src/sys/fadvise.js";
import { allocationRuns, seekProblem } from "../../src/sys/seek.js";
import { errnoName, libc, sysError } from "../../src/sys/libc.js";

let dir: string;
let fd: number;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "nbdstate-sys-"));
  const f = join(dir, "f");
  writeFileSync(f, "");
  truncateSync(f, 1 << 20);
  fd = openSync(f, "r+");
  writeSync(fd, Buffer.alloc(8192, 1), 0, 8192, 65536);
});
afterAll(() => {
  closeSync(fd);
  rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(process.platform !== "linux")("libc through koffi", () => {
  it("loads on Linux", () => {
    expect(libc()).not.toBeNull();
    expect(canFadvise()).toBe(true);
  });

  it("posix_fadvise succeeds on an open file and says EBADF for a closed one", async () => {
    for (const advice of [FADV.NORMAL, FADV.RANDOM, FADV.SEQUENTIAL, FADV.DONTNEED]) {
      expect(fadvise(fd, 0, 0, advice)).toBe(0);
    }
    expect(await fadviseAsync(fd, 0, 4096, FADV.WILLNEED)).toBe(0);
    const gone = openSync(join(dir, "f"), "r");
    closeSync(gone);
    expect(fadvise(gone, 0, 0, FADV.NORMAL)).toBe(constants.errno.EBADF);
    expect(errnoName(constants.errno.EBADF)).toBe("EBADF");
  });

  it("finds data and holes, and only the first run when asked for one", () => {
    expect(seekProblem(fd)).toBeNull();
    expect(allocationRuns(fd, 0, 1 << 20, false)).toEqual([
      { length: 65536, hole: true },
      { length: 8192, hole: false },
      { length: (1 << 20) - 65536 - 8192, hole: true },
    ]);
    expect(allocationRuns(fd, 0, 1 << 20, true)).toEqual([{ length: 65536, hole: true }]);
    expect(allocationRuns(fd, 70000, 70001, false)).toEqual([{ length: 1, hole: false }]);
    // Past the end of the file: hole (a read there gives zeros).
    expect(allocationRuns(fd, 1 << 20, (1 << 20) + 4096, false)).toEqual([{ length: 4096, hole: true }]);
  });

  it("a remembered data run gives the same runs as fresh lseeks, read after read, across data and holes", () => {
    const known = { start: 0, end: 0 };
    for (const [from, to] of [[0, 4096], [60000, 70000], [65536, 70000], [66000, 73000], [70000, 80000], [73000, 1 << 20], [0, 1 << 20], [65600, 65700]] as const) {
      expect(allocationRuns(fd, from, to, false, known), `${from}-${to}`).toEqual(allocationRuns(fd, from, to, false));
    }
    // What it learnt is data up to the run's end (from where the last lookup started), never a hole.
    expect(known.end).toBe(65536 + 8192);
    expect(known.start).toBeGreaterThanOrEqual(65536);
    expect(known.start).toBeLessThan(known.end);
  });

  it("says why where the file system has no SEEK_HOLE (procfs)", () => {
    const p = openSync("/proc/self/stat", "r"); // seq files refuse SEEK_HOLE
    try {
      expect(seekProblem(p)).toMatch(/lseek SEEK_HOLE: E/);
    } finally {
      closeSync(p);
    }
  });

  it("makes errors like Node's (code, errno, syscall)", () => {
    const e = sysError("openat", constants.errno.EXDEV, "detail");
    expect(e.code).toBe("EXDEV");
    expect(e.errno).toBe(-constants.errno.EXDEV);
    expect(e.message).toBe("openat: EXDEV: detail");
  });
});
