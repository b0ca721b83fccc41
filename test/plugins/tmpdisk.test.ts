// tmpdisk plugin through the CLI: the same flags and size as nbdkit, a
// real ext4 (dumpe2fs) with the label asked for, a fresh disk per
// connection, nothing left in $TMPDIR, command= with nbdkit's variables
// giving the same bytes as nbdkit, and one-line errors when mkfs fails.
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeTmpDir, removeTmpDir, run, runOk } from "../helpers/server.js";
import { requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";
import { copyOut, copyToFile, info, nbdsh, runNbdstate, serve, type Served } from "./disk-helpers.js";

const ok = requireTools([TOOLS.nbdinfo, TOOLS.nbdcopy, TOOLS.nbdkit, ["dumpe2fs", "e2fsprogs"], ["mkfs.fat", "dosfstools"], ["minfo", "mtools"]]) && requirePythonLibnbd();

let root: string;
let tmpA: string;
let tmpB: string;
beforeAll(() => {
  if (!ok) return;
  root = makeTmpDir("nbdstate-tmpdisk-");
  tmpA = makeTmpDir("nbdstate-tmpdisk-a-");
  tmpB = makeTmpDir("nbdstate-tmpdisk-b-");
});
afterAll(() => {
  for (const d of [root, tmpA, tmpB]) if (d) removeTmpDir(d);
});

const env = (tmp: string) => ({ ...process.env, TMPDIR: tmp });

async function both<T>(args: string[], body: (ours: Served, theirs: Served) => Promise<T>): Promise<T> {
  const [ours, theirs] = await Promise.all([serve("nbdstate", args, { env: env(tmpA) }), serve("nbdkit", args, { env: env(tmpB) })]);
  try {
    return await body(ours, theirs);
  } finally {
    await Promise.all([ours.stop(), theirs.stop()]);
  }
}

describe.skipIf(!ok)("tmpdisk plugin", () => {
  it("serves an ext4 of the size and label asked, with nbdkit's flags; nothing stays in $TMPDIR", async () => {
    await both(["tmpdisk", "8M", "label=HELLO"], async (ours, theirs) => {
      const [a, b] = await Promise.all([info(ours.uri), info(theirs.uri)]);
      expect(a).toEqual(b);
      expect(a).toMatchObject({ "export-size": 8 << 20, can_multi_conn: false, can_trim: true, can_fua: true, is_read_only: false });
      const img = await copyToFile(ours.uri, root);
      const d = (await runOk("dumpe2fs", ["-h", img])).stdout;
      expect(d).toMatch(/Filesystem volume name:\s+HELLO/);
      expect(d).toMatch(/Filesystem features:.*extent/);
      expect(readdirSync(tmpA)).toEqual([]);
    });
  });

  it("gives each connection its own fresh disk", async () => {
    const s = await serve("nbdstate", ["tmpdisk", "4M", "type=ext2"], { env: env(tmpA) });
    try {
      // While one connection has written, a second one sees a pristine disk.
      const out = await nbdsh(s.uri, [
        "h.pwrite(b'X' * 4096, 2 << 20); h.flush()",
        `h2 = nbd.NBD(); h2.connect_uri('${s.uri}')`,
        "print(bytes(h.pread(1, 2 << 20)), bytes(h2.pread(1, 2 << 20)))",
        "print(len(__import__('os').listdir('" + tmpA + "')))",
      ].join("\n"));
      expect(out.trim().split("\n")).toEqual(["b'X' b'\\x00'", "0"]);
    } finally {
      await s.stop();
    }
  });

  it("command= sees $disk, $size and other parameters as variables; same bytes as nbdkit", async () => {
    const cmd = 'truncate -s $size "$disk"; printf "%s|%s|%s" "$greeting" "$size" "$type" | dd of="$disk" conv=notrunc status=none';
    await both(["tmpdisk", "size=1M", `command=${cmd}`, "greeting=hello world", "type=xfs"], async (ours, theirs) => {
      const [a, b] = await Promise.all([copyOut(ours.uri, root), copyOut(theirs.uri, root)]);
      expect(a.length).toBe(1 << 20);
      expect(a.subarray(0, 24).toString()).toBe("hello world|1048576|xfs\0");
      expect(a.equals(b)).toBe(true);
    });
  });

  it("type=vfat label= makes a labelled FAT filesystem (nbdkit passes -L to mkfs.fat, which fails)", async () => {
    const s = await serve("nbdstate", ["tmpdisk", "8M", "type=vfat", "label=MYDISK"], { env: env(tmpA) });
    try {
      const img = await copyToFile(s.uri, root);
      expect((await runOk("minfo", ["-i", img, "::"])).stdout).toMatch(/disk label="MYDISK/);
    } finally {
      await s.stop();
    }
    const k = await serve("nbdkit", ["tmpdisk", "8M", "type=vfat", "label=MYDISK"], { env: env(tmpB) });
    try {
      const r = await run("nbdinfo", ["--size", k.uri]);
      expect(r.code).not.toBe(0);
      expect(k.stderr).toMatch(/invalid option -- 'L'/);
    } finally {
      await k.stop();
    }
  });

  it("a failing mkfs or command refuses the connection with one line; the server keeps serving", async () => {
    for (const [args, re] of [
      [["type=nosuchfs"], /tmpdisk: mkfs -t nosuchfs exited with code 1: .*nosuchfs/],
      [["command=echo oh no >&2; exit 3"], /tmpdisk: command exited with code 3: oh no/],
      [["command=true"], /tmpdisk: the command did not create \$disk/],
    ] as const) {
      const s = await serve("nbdstate", ["tmpdisk", "4M", ...args], { env: env(tmpA) });
      try {
        const r = await run("nbdinfo", ["--size", s.uri]);
        expect(r.code).not.toBe(0);
        expect(s.stderr).toMatch(re);
        expect(s.stderr.trim().split("\n")).toHaveLength(1);
        expect(s.exited).toBe(false);
        expect(readdirSync(tmpA)).toEqual([]);
      } finally {
        await s.stop();
      }
    }
  });

  it("refuses bad command lines with one clear line", async () => {
    const cases: [string[], RegExp][] = [
      [["tmpdisk", "label=x"], /tmpdisk: size parameter is required/],
      [["tmpdisk", "1M", "disk=/etc/passwd"], /tmpdisk: 'disk' parameter cannot be set/],
      [["tmpdisk", "1Q"], /tmpdisk: size: could not parse size '1Q'/],
    ];
    const results = await Promise.all(cases.map(([args]) => runNbdstate(["-f", "-U", join(root, "never.sock"), ...args])));
    results.forEach((r, i) => {
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(cases[i]![1]);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
    });
  });
});
