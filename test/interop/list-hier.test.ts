// The experimental hierarchical listing (NBD_OPT_LIST_HIER, docs/list-hier.md)
// over a dir x tar x partition tree of 1000 leaves: 10 tar files in a
// directory, 10 GPT disk images in each, 10 partitions in each image.
// `nbdstate ls` browses it level by level; walking the whole tree with the
// project's client finds exactly the exports of the flat `nbdinfo --list`
// on the same server; a path naming nothing is NBD_REP_ERR_UNKNOWN; without
// --experimental-list-hier the option is unknown and `ls` falls back to
// NBD_OPT_LIST with the same answer.
import { copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NbdClient } from "../../src/client/client.js";
import { NbdOptionError } from "../../src/client/errors.js";
import type { HierEntry } from "../../src/client/options.js";
import * as C from "../../src/protocol/constants.js";
import { isNbdkit, makeTmpDir, runCli, runOk, startServer, type RunningServer } from "../helpers/server.js";
import { requireTools, TOOLS } from "../helpers/tools.js";

const ok = !isNbdkit && requireTools([TOOLS.nbdinfo, ["sfdisk", "fdisk"], ["tar", "tar"]]);
const N = 10;

describe.skipIf(!ok)("NBD_OPT_LIST_HIER over dir x tar x partition (1000 leaves)", () => {
  let dir: string;
  let hier: RunningServer;
  let flat: RunningServer;
  const stack = (d: string) => ["-r", "--filter=partition", "--filter=tar", "file", `dir=${d}`, "tar-entry=exportname", "partition=exportname"];

  beforeAll(async () => {
    const work = makeTmpDir();
    dir = join(work, "archives");
    mkdirSync(dir);
    const img = join(work, "disk.img");
    writeFileSync(img, Buffer.alloc(256 * 1024));
    const table = ["label: gpt", "first-lba: 34", ...Array.from({ length: N }, (_, i) => `start=${40 + i * 32}, size=32`)].join("\n") + "\n";
    await runOk("sfdisk", ["--no-reread", "--no-tell-kernel", "-q", img], { input: table });
    const members = join(work, "members");
    mkdirSync(members);
    for (let m = 0; m < N; m++) copyFileSync(img, join(members, `disk${m}.img`));
    const names = Array.from({ length: N }, (_, m) => `disk${m}.img`);
    for (let t = 0; t < N; t++) await runOk("tar", ["-cf", join(dir, `a${t}.tar`), "-C", members, ...names]);
    hier = await startServer(["--experimental-list-hier", ...stack(dir)]);
    flat = await startServer(stack(dir));
  }, 120_000);

  afterAll(async () => {
    await hier?.stop();
    await flat?.stop();
  });

  const ls = (srv: RunningServer, path: string) => runCli(["ls", srv.uriFor(path)], { timeoutMs: 60_000 });

  it("nbdstate ls: the tars at the top, the images in a tar, the partitions of an image (with descriptions)", async () => {
    const top = await ls(hier, "");
    expect([top.code, top.stderr]).toEqual([0, ""]);
    expect(top.stdout.trim().split("\n")).toEqual(Array.from({ length: N }, (_, t) => `a${t}.tar:`));
    const tar = await ls(hier, "a3.tar:");
    expect(tar.stdout.trim().split("\n")).toEqual(Array.from({ length: N }, (_, m) => `a3.tar:disk${m}.img:`));
    // Without the trailing ':' the name is taken as the directory to list.
    const img = await ls(hier, "a3.tar:disk4.img");
    const lines = img.stdout.trim().split("\n");
    expect(lines.map((l) => l.split("\t")[0])).toEqual(Array.from({ length: N }, (_, p) => `a3.tar:disk4.img:${p + 1}`));
    for (const l of lines) expect(l.split("\t")[1], "the partition filter's description").toBeTruthy();
  });

  it("walking the tree with the client finds exactly the 1000 exports of the flat nbdinfo --list, one level per request", async () => {
    const leaves: string[] = [];
    let requests = 0;
    let biggest = 0;
    const walk = async (path: string): Promise<void> => {
      const c = await NbdClient.connect({ path: hier.sock });
      let level: HierEntry[];
      try {
        level = await c.listHier(path);
      } finally {
        await c.abort();
      }
      requests++;
      biggest = Math.max(biggest, level.length);
      for (const e of level) {
        if (e.isExport) leaves.push(e.name);
        if (e.isDir) await walk(`${e.name}:`);
      }
    };
    await walk("");
    const listed = await runOk("nbdinfo", ["--list", "--json", hier.uri], { timeoutMs: 120_000 });
    const names = (JSON.parse(listed.stdout) as { exports: Array<{ "export-name": string }> }).exports.map((e) => e["export-name"]);
    expect(names).toHaveLength(N * N * N);
    expect(leaves.sort()).toEqual(names.sort());
    expect(requests).toBe(1 + N + N * N);
    expect(biggest).toBe(N);
  }, 180_000);

  it("a path that names nothing is NBD_REP_ERR_UNKNOWN, a path without ':' is NBD_REP_ERR_INVALID; the connection goes on", async () => {
    const c = await NbdClient.connect({ path: hier.sock });
    try {
      const unknown = await c.listHier("nosuch.tar:").catch((e: unknown) => e);
      expect(unknown).toBeInstanceOf(NbdOptionError);
      expect((unknown as NbdOptionError).replyType).toBe(C.NBD_REP_ERR_UNKNOWN);
      const invalid = await c.listHier("a1.tar").catch((e: unknown) => e);
      expect((invalid as NbdOptionError).replyType).toBe(C.NBD_REP_ERR_INVALID);
      expect((await c.listHier("a1.tar:disk0.img:")).length).toBe(N);
    } finally {
      await c.abort();
    }
    const r = await ls(hier, "nosuch.tar:");
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe("nbdstate: error: ls: NBD_OPT_LIST_HIER failed: NBD_REP_ERR_UNKNOWN: no export is under 'nosuch.tar:'");
  });

  it("without --experimental-list-hier the option is unknown (UNSUP) and ls falls back to NBD_OPT_LIST with the same lines", async () => {
    const c = await NbdClient.connect({ path: flat.sock });
    try {
      const e = await c.listHier("").catch((x: unknown) => x);
      expect((e as NbdOptionError).replyType).toBe(C.NBD_REP_ERR_UNSUP);
    } finally {
      await c.abort();
    }
    for (const path of ["", "a7.tar:", "a7.tar:disk2.img:"]) {
      const [a, b] = await Promise.all([ls(hier, path), ls(flat, path)]);
      expect(b.code).toBe(0);
      expect(b.stderr.trim()).toBe("nbdstate: ls: the server has no NBD_OPT_LIST_HIER; this level is cut from NBD_OPT_LIST");
      expect(b.stdout).toBe(a.stdout);
    }
    // The plain listing works the same on both servers.
    const [x, y] = await Promise.all([runOk("nbdinfo", ["--list", "--json", hier.uri]), runOk("nbdinfo", ["--list", "--json", flat.uri])]);
    expect(JSON.parse(x.stdout).exports.length).toBe(N * N * N);
    expect(JSON.parse(y.stdout).exports.length).toBe(N * N * N);
  }, 120_000);
});
