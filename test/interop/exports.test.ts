// Exports through the whole stack, seen by real clients: NBD_OPT_LIST
// (nbdinfo --list, --list --json, nbdsh opt_list), NBD_OPT_INFO/GO with
// NBD_INFO_NAME (the canonical name: "" resolved through defaultExport) and
// NBD_INFO_DESCRIPTION, for the memory plugin, the file plugin's dir= mode
// and every mode of the exportname filter; hostile names (traversal, NUL,
// over-long) refused with the connection still usable; the option budget;
// and bounds on listings (size cap, back-pressure).
//
// Runs against nbdkit too (NBDSTATE_TEST_SERVER=nbdkit): where the two
// differ on purpose the test says so (nbdkit lists a directory in readdir
// order and follows symlinks out of dir=; its option budget is 32).
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  OPT, REP, RawClosedError, RawConn, encodeOption, handshake, openTransmission, rawDisconnect, rawRead,
  readOptionReply, u16, u32, type OptionReply,
} from "../helpers/raw.js";
import { isNbdkit, makeTmpDir, removeTmpDir, run, runOk, sleep, startServer, SERVER_NAME, type RunningServer } from "../helpers/server.js";
import { PYTHON, requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";

const ok = requireTools([TOOLS.nbdinfo, TOOLS.nbdsh, TOOLS.nbdcopy]) && requirePythonLibnbd();

const INFO_NAME = 1;
const INFO_DESCRIPTION = 2;
const ENOENT = 2; // libnbd's errno for NBD_REP_ERR_UNKNOWN
/**
 * Options one connection may send (nbdstate's MAX_OPTIONS). nbdkit has its
 * own budget (MAX_NR_OPTIONS, counted its own way): against it the tests
 * check only that a flood is cut.
 */
const OPTION_BUDGET = 256;

// ---------------------------------------------------------------------------
// Fixture: a directory of exports, created at collection time so the tables
// below can name it. Besides three files of distinct content it holds what
// must NOT be an export: a subdirectory, a FIFO, a dangling symlink, and a
// symlink leading out of the directory; plus one symlink to a file inside
// (which is an export, as in nbdkit).

const ROOT = makeTmpDir("nbdstate-exports-");
const DIR = join(ROOT, "exports");
const SECRET = join(ROOT, "secret");
const CONTENT: Record<string, Buffer> = {
  file1: randomBytes(4096),
  file2: randomBytes(65536 + 7),
  file3: randomBytes(1 << 20),
};
mkdirSync(DIR);
for (const [n, b] of Object.entries(CONTENT)) writeFileSync(join(DIR, n), b);
writeFileSync(SECRET, "outside the exported directory\n");
mkdirSync(join(DIR, "subdir"));
execFileSync("mkfifo", [join(DIR, "fifo")]);
symlinkSync("does-not-exist", join(DIR, "dangling"));
symlinkSync("file1", join(DIR, "alias"));
symlinkSync("../secret", join(DIR, "escape"));
CONTENT.alias = CONTENT.file1!;

/** What dir= lists. nbdkit follows symlinks out of the directory; nbdstate refuses them. */
const DIR_EXPORTS = isNbdkit ? ["alias", "escape", "file1", "file2", "file3"] : ["alias", "file1", "file2", "file3"];

afterAll(() => removeTmpDir(ROOT));

// ---------------------------------------------------------------------------
// Clients

interface NbdinfoList {
  protocol: string;
  exports: Array<{ "export-name": string; description?: string; "export-size": number }>;
}

async function nbdinfoJson(uri: string): Promise<NbdinfoList> {
  const r = await runOk("nbdinfo", ["--list", "--json", uri]);
  return JSON.parse(r.stdout) as NbdinfoList;
}

type InfoResult = { canonical: string; description: string | null; size: number } | { errno: number };
interface Probe {
  /** [name, description] pairs from opt_list, or null if the server refused to list. */
  list: Array<[string, string]> | null;
  listError?: string;
  info: Record<string, InfoResult>;
}

/**
 * python3-libnbd, in opt mode with full info: opt_list, then opt_info of
 * each name on the same connection (so a refused name must leave the
 * connection usable), recording canonical name (NBD_INFO_NAME), description
 * (NBD_INFO_DESCRIPTION) and size, or the errno of a refusal.
 */
const PROBE = String.raw`
import json, sys, nbd
uri, names = sys.argv[1], json.loads(sys.argv[2])
h = nbd.NBD()
h.set_opt_mode(True)
h.set_full_info(True)
h.connect_uri(uri)
res = {"info": {}}
got = []
try:
    h.opt_list(lambda n, d: got.append([n, d]))
    res["list"] = got
except nbd.Error as e:
    res["list"] = None
    res["listError"] = e.string
for n in names:
    h.set_export_name(n)
    try:
        h.opt_info()
    except nbd.Error as e:
        res["info"][n] = {"errno": e.errnum}
        continue
    try:
        d = h.get_export_description()
    except nbd.Error:
        d = None
    res["info"][n] = {"canonical": h.get_canonical_export_name(), "description": d, "size": h.get_size()}
h.opt_abort()
print(json.dumps(res))
`;

async function probe(uri: string, names: string[] = []): Promise<Probe> {
  const r = await runOk(PYTHON, ["-c", PROBE, uri, JSON.stringify(names)]);
  return JSON.parse(r.stdout.trim().split("\n").pop()!) as Probe;
}

/** nbdsh (the shell script; Debian's python3 first on PATH so `import nbd` works). */
async function nbdsh(args: string[]): Promise<string> {
  const r = await runOk("nbdsh", args, { env: { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? "/bin"}` } });
  return r.stdout;
}

/** The whole export, read with nbdcopy. */
async function nbdcopyRead(uri: string): Promise<Buffer> {
  const r = await runOk("nbdcopy", [uri, "-"]);
  return r.stdoutBuf;
}

/** Raw NBD_OPT_GO (or INFO) of `name` with info requests: the replies up to ACK or error. */
async function rawGo(c: RawConn, name: string | Buffer, infos: number[] = [], option: number = OPT.GO) {
  const n = typeof name === "string" ? Buffer.from(name, "utf8") : name;
  c.write(encodeOption(option, Buffer.concat([u32(n.length), n, u16(infos.length), ...infos.map(u16)])));
  const replies: OptionReply[] = [];
  for (;;) {
    const r = await readOptionReply(c);
    expect(r.option).toBe(option);
    replies.push(r);
    if (r.type === REP.ACK || r.type >= 0x80000000) break;
  }
  const final = replies[replies.length - 1]!;
  const info = (t: number) => {
    const r = replies.find((x) => x.type === REP.INFO && x.data.readUInt16BE(0) === t);
    return r ? r.data.subarray(2).toString("utf8") : undefined;
  };
  return { type: final.type, message: final.data.toString("utf8"), name: info(INFO_NAME), description: info(INFO_DESCRIPTION) };
}

/** Raw NBD_OPT_LIST: the final reply type and the names before it. */
function rawList(c: RawConn): Promise<{ type: number; names: string[] }> {
  c.write(encodeOption(OPT.LIST));
  return readListReplies(c);
}

/** The replies to one NBD_OPT_LIST already sent. */
async function readListReplies(c: RawConn): Promise<{ type: number; names: string[] }> {
  const names: string[] = [];
  for (;;) {
    const r = await readOptionReply(c);
    expect(r.option).toBe(OPT.LIST);
    if (r.type === REP.SERVER) names.push(r.data.subarray(4, 4 + r.data.readUInt32BE(0)).toString("utf8"));
    else return { type: r.type, names };
  }
}

/** After refusals on `c`: NBD_OPT_GO of a good name works on the same connection, and its data reads back. */
async function goodGoStillWorks(c: RawConn, name: string, want: Buffer): Promise<void> {
  const r = await rawGo(c, name);
  expect(r.type, `GO ${name} after the refusals: ${r.message}`).toBe(REP.ACK);
  const got = await rawRead(c, 0, Math.min(want.length, 4096));
  expect(got).toEqual(want.subarray(0, 4096));
  rawDisconnect(c);
}

const sorted = (a: string[]) => [...a].sort();

// ---------------------------------------------------------------------------

describe.skipIf(!ok)(`exports against ${SERVER_NAME}`, () => {
  describe("memory plugin: one disk, listed as the default export \"\"", () => {
    let srv: RunningServer;
    beforeAll(async () => {
      srv = await startServer(["memory", "size=1M"]);
    });
    afterAll(async () => {
      await srv?.stop();
    });

    it("nbdinfo --list --json lists exactly the export \"\" with its size", async () => {
      const j = await nbdinfoJson(srv.uri);
      expect(j.exports.map((e) => e["export-name"])).toEqual([""]);
      expect(j.exports[0]!["export-size"]).toBe(1 << 20);
      expect(j.exports[0]!.description).toBeUndefined();
    });

    it("nbdinfo --list (text) shows export=\"\"", async () => {
      const r = await runOk("nbdinfo", ["--list", srv.uri]);
      expect(r.stdout.match(/^export=/gm)).toHaveLength(1);
      expect(r.stdout).toMatch(/^export="":$/m);
    });

    it("nbdsh opt_list sees [\"\"], and opt_info of \"\" reports the canonical name \"\"", async () => {
      const p = await probe(srv.uri, [""]);
      expect(p.list).toEqual([["", ""]]);
      expect(p.info[""]).toEqual({ canonical: "", description: null, size: 1 << 20 });
    });
  });

  describe("file plugin dir=: every regular file is an export", () => {
    let srv: RunningServer;
    beforeAll(async () => {
      srv = await startServer(["file", `dir=${DIR}`]);
    });
    afterAll(async () => {
      await srv?.stop();
    });

    it("nbdinfo --list --json lists the regular files (and links to files inside), not subdirs, FIFOs or dangling links", async () => {
      const j = await nbdinfoJson(srv.uri);
      const names = j.exports.map((e) => e["export-name"]);
      expect(sorted(names)).toEqual(DIR_EXPORTS);
      if (!isNbdkit) expect(names).toEqual(DIR_EXPORTS); // nbdstate sorts; nbdkit keeps readdir order
      for (const e of j.exports) if (e["export-name"] in CONTENT) expect(e["export-size"]).toBe(CONTENT[e["export-name"]]!.length);
    });

    it("nbdinfo --list (text) prints one export= block per file, with sizes", async () => {
      const r = await runOk("nbdinfo", ["--list", srv.uri]);
      const names = [...r.stdout.matchAll(/^export="([^"]*)":$/gm)].map((m) => m[1]!);
      expect(sorted(names)).toEqual(DIR_EXPORTS);
      expect(r.stdout).toMatch(/^\texport-size: 4096 \(4K\)$/m);
    });

    it("nbdsh opt_list returns the same names, with no descriptions", async () => {
      const p = await probe(srv.uri);
      expect(sorted(p.list!.map(([n]) => n))).toEqual(DIR_EXPORTS);
      expect(p.list!.every(([, d]) => d === "")).toBe(true);
    });

    it("nbdcopy of each listed export equals the file", async () => {
      for (const name of ["file1", "file2", "file3", "alias"]) {
        expect((await nbdcopyRead(srv.uriFor(name))).equals(CONTENT[name]!), name).toBe(true);
      }
    });

    it("nbdsh pread of each export (opened by name after opt_list) equals the file", async () => {
      const code = `
import json
names = []
h.opt_list(lambda n, d: names.append(n))
out = {}
for n in sorted(names):
    if n == "escape":
        continue
    g = nbd.NBD()
    g.set_export_name(n)
    g.connect_unix(${JSON.stringify(srv.sock)})
    out[n] = g.pread(g.get_size(), 0).hex()
    g.shutdown()
print(json.dumps(out))
`;
      const out = JSON.parse((await nbdsh(["--opt-mode", "-u", srv.uri, "-c", code])).trim()) as Record<string, string>;
      expect(Object.keys(out)).toEqual(["alias", "file1", "file2", "file3"]);
      for (const [n, hex] of Object.entries(out)) expect(Buffer.from(hex, "hex").equals(CONTENT[n]!), n).toBe(true);
    });

    it("the list is read at NBD_OPT_LIST time: a file created after a first listing appears in a second one on the same connection [nbdkit: on a new one]", async () => {
      const fresh = join(DIR, "fresh");
      // nbdkit answers NBD_OPT_LIST once per connection (then NBD_REP_ERR_INVALID).
      const second = isNbdkit ? `g = nbd.NBD()\ng.set_opt_mode(True)\ng.connect_unix(${JSON.stringify(srv.sock)})` : "g = h";
      const code = `
import json, sys
first, second = [], []
h.opt_list(lambda n, d: first.append(n))
with open(${JSON.stringify(fresh)}, "wb") as f:
    f.write(b"new" * 1000)
${second}
g.opt_list(lambda n, d: second.append(n))
print(json.dumps([first, second]))
`;
      try {
        const [first, second] = JSON.parse((await nbdsh(["--opt-mode", "-u", srv.uri, "-c", code])).trim()) as [string[], string[]];
        expect(first).not.toContain("fresh");
        expect(sorted(second)).toEqual(sorted([...DIR_EXPORTS, "fresh"]));
        expect((await nbdcopyRead(srv.uriFor("fresh"))).toString()).toBe("new".repeat(1000));
      } finally {
        rmSync(fresh, { force: true });
      }
      // ... and a deleted file disappears again.
      expect(sorted((await probe(srv.uri)).list!.map(([n]) => n))).toEqual(DIR_EXPORTS);
    });

    it("NBD_INFO_NAME and size for a named export: opt_info reports the name as given", async () => {
      const p = await probe(srv.uri, ["file2", "alias"]);
      expect(p.info.file2).toEqual({ canonical: "file2", description: null, size: CONTENT.file2!.length });
      expect(p.info.alias).toEqual({ canonical: "alias", description: null, size: CONTENT.file1!.length });
    });

    it("there is no default export: \"\" and missing names get NBD_REP_ERR_UNKNOWN and negotiation continues", async () => {
      const p = await probe(srv.uri, ["", "missing", "subdir", "fifo", "dangling", "file3"]);
      for (const n of ["", "missing", "subdir", "fifo", "dangling"]) expect(p.info[n], JSON.stringify(n)).toEqual({ errno: ENOENT });
      expect(p.info.file3).toMatchObject({ canonical: "file3", size: 1 << 20 });
    });

    it("traversal names (../x, /etc/passwd, a/../../b, .., .) get NBD_REP_ERR_UNKNOWN on NBD_OPT_INFO and GO, then GO file1 works on the same connection", async () => {
      const c = await RawConn.connect(srv.sock);
      await handshake(c);
      for (const name of ["../x", "../secret", "/etc/passwd", `${DIR}/file1`, "a/../../b", "..", ".", "./file1", "subdir/../file1"]) {
        for (const option of [OPT.INFO, OPT.GO]) {
          const r = await rawGo(c, name, [INFO_NAME], option);
          expect(r.type, `${option === OPT.GO ? "GO" : "INFO"} ${JSON.stringify(name)}`).toBe(REP.ERR_UNKNOWN);
        }
      }
      await goodGoStillWorks(c, "file1", CONTENT.file1!);
    });

    it.skipIf(isNbdkit)("a symlink leading out of dir= is neither listed nor opened (NBD_REP_ERR_UNKNOWN) [nbdstate: nbdkit follows it]", async () => {
      const c = await RawConn.connect(srv.sock);
      await handshake(c);
      expect((await rawList(c)).names).not.toContain("escape");
      expect((await rawGo(c, "escape")).type).toBe(REP.ERR_UNKNOWN);
      await goodGoStillWorks(c, "alias", CONTENT.file1!);
    });

    it("names with NUL or over 4096 bytes get NBD_REP_ERR_INVALID (malformed string), then GO file2 works on the same connection", async () => {
      const c = await RawConn.connect(srv.sock);
      await handshake(c);
      const bad = [Buffer.from("file1\0../../etc/passwd"), Buffer.from("\0"), Buffer.alloc(4097, "a"), Buffer.alloc(60000, "/")];
      for (const name of bad) {
        for (const option of [OPT.INFO, OPT.GO]) {
          const r = await rawGo(c, name, [], option);
          expect(r.type, `${name.length}-byte name`).toBe(REP.ERR_INVALID);
        }
      }
      // Exactly 4096 bytes is a valid string: merely unknown.
      expect((await rawGo(c, Buffer.alloc(4096, "a"))).type).toBe(REP.ERR_UNKNOWN);
      await goodGoStillWorks(c, "file2", CONTENT.file2!);
    });
  });

  // -------------------------------------------------------------------------
  // exportname filter over file dir=: every exportname-list mode, the default
  // export, strictness and descriptions, through nbdinfo and nbdsh.

  type Expect = { canonical: string; description?: string | null } | "refused";
  interface Mode {
    title: string;
    args: string[];
    /** Expected listing (names, with descriptions where given), or "error". */
    list: Array<string | [string, string]> | "error";
    /** Compare the listing in order (otherwise as a set: nbdkit keeps readdir order). */
    ordered?: boolean;
    info: Record<string, Expect>;
    /**
     * Listed names that cannot be opened: nbdinfo --list opens every listed
     * export, so it names these on stderr and exits non-zero.
     */
    unopenable?: string[];
    /**
     * What nbdinfo --list prints as names, where it differs from the list:
     * with full info it shows the canonical name (NBD_INFO_NAME) of each.
     */
    nbdinfoNames?: string[];
  }

  const byName = (name: string, description?: string): Expect => ({ canonical: name, ...(description !== undefined ? { description } : {}) });
  const DESC_SCRIPT = `script:printf 'size of %s: ' "$name"; wc -c < ${DIR}/"$name"`;

  const MODES: Mode[] = [
    {
      title: "exportname-list=keep (default): the plugin's list passes through; unlisted names still open",
      args: [],
      list: DIR_EXPORTS,
      info: { "": "refused", file1: byName("file1"), missing: "refused" },
    },
    {
      title: "default-export=file2: \"\" opens file2 and NBD_INFO_NAME reports the canonical name file2",
      args: ["default-export=file2"],
      list: DIR_EXPORTS,
      info: { "": byName("file2"), file2: byName("file2"), file1: byName("file1") },
    },
    {
      title: "default-export= (empty) is the same as leaving it out",
      args: ["default-export="],
      list: DIR_EXPORTS,
      info: { "": "refused", file3: byName("file3") },
    },
    {
      title: "exportname-list=error: NBD_OPT_LIST fails, and negotiation continues (names still open)",
      args: ["exportname-list=error", "default-export=file3"],
      list: "error",
      info: { "": byName("file3"), file1: byName("file1") },
    },
    {
      title: "exportname-list=empty: an empty list; names still open",
      args: ["exportname-list=empty"],
      list: [],
      info: { file2: byName("file2"), "": "refused" },
    },
    {
      title: "exportname-list=defaultonly with default-export=file3: only the canonical default name is listed",
      args: ["exportname-list=defaultonly", "default-export=file3"],
      list: ["file3"],
      info: { "": byName("file3"), file1: byName("file1") },
    },
    {
      // nbdkit's file plugin has the default "" in dir= mode (which then
      // cannot be opened), so nbdkit lists "" here.
      title: "exportname-list=defaultonly with no default export below (file dir=): an empty list [nbdkit: \"\", unopenable]",
      args: ["exportname-list=defaultonly"],
      list: isNbdkit ? [""] : [],
      info: { "": "refused", file1: byName("file1") },
      unopenable: isNbdkit ? [""] : undefined,
    },
    {
      title: "exportname-list=explicit: exactly the exportname= names, in the order given",
      args: ["exportname-list=explicit", "exportname=file3", "exportname=file1"],
      list: ["file3", "file1"],
      ordered: true,
      info: { file3: byName("file3"), file2: byName("file2") },
    },
    {
      title: "exportname-list=explicit may advertise a name that cannot be opened (NBD_REP_ERR_UNKNOWN for it)",
      args: ["exportname-list=explicit", "exportname=file1", "exportname=nosuch"],
      list: ["file1", "nosuch"],
      ordered: true,
      info: { nosuch: "refused", file1: byName("file1") },
      unopenable: ["nosuch"],
    },
    {
      title: "exportname-strict=true: only exportname= names open (others, and \"\", are refused) though the plugin's list is still advertised",
      args: ["exportname-strict=true", "exportname=file1", "exportname=file3"],
      list: DIR_EXPORTS,
      info: { file1: byName("file1"), file3: byName("file3"), file2: "refused", "": "refused", missing: "refused" },
      unopenable: DIR_EXPORTS.filter((n) => n !== "file1" && n !== "file3"),
    },
    {
      title: "exportname-list=explicit with exportname-strict=true: clients see and may open exactly file1 and file3",
      args: ["exportname-list=explicit", "exportname-strict=true", "exportname=file1", "exportname=file3"],
      list: ["file1", "file3"],
      ordered: true,
      info: { file1: byName("file1"), file3: byName("file3"), file2: "refused", alias: "refused", "": "refused" },
    },
    {
      title: "exportname-strict=true with exportname=\"\" and default-export=file1 (listed): \"\" opens file1",
      args: ["exportname-list=explicit", "exportname-strict=true", "exportname=", "exportname=file1", "default-export=file1"],
      list: ["", "file1"],
      ordered: true,
      info: { "": byName("file1"), file1: byName("file1"), file2: "refused" },
      nbdinfoNames: ["file1", "file1"],
    },
    {
      title: "exportname-strict=true with exportname=\"\" but default-export=file1 not listed: \"\" is refused too",
      args: ["exportname-list=explicit", "exportname-strict=true", "exportname=", "default-export=file1"],
      list: [""],
      ordered: true,
      info: { "": "refused", file1: "refused" },
      unopenable: [""],
    },
    {
      title: "exportname-list=defaultonly with exportname-strict=true and no exportname=\"\": no default, an empty list",
      args: ["exportname-list=defaultonly", "exportname-strict=true", "exportname=file1"],
      list: [],
      info: { "": "refused", file1: byName("file1") },
    },
    {
      title: "exportdesc=fixed:STRING: every listed export and NBD_INFO_DESCRIPTION carry STRING",
      args: ["exportdesc=fixed:served by the test: all disks"],
      list: DIR_EXPORTS.map((n) => [n, "served by the test: all disks"] as [string, string]),
      info: { file1: byName("file1", "served by the test: all disks"), file3: byName("file3", "served by the test: all disks") },
    },
    {
      title: "exportdesc=script:CMD: each description is the script's output with $name set",
      args: [`exportdesc=${DESC_SCRIPT}`, "exportname-list=explicit", "exportname=file1", "exportname=file2"],
      list: [["file1", "size of file1: 4096"], ["file2", "size of file2: 65543"]],
      ordered: true,
      info: { file1: byName("file1", "size of file1: 4096"), file3: byName("file3", "size of file3: 1048576") },
    },
    {
      title: "exportdesc=fixed with exportname-list=defaultonly: the default name is listed without a description, as nbdkit",
      args: ["exportname-list=defaultonly", "default-export=file2", "exportdesc=fixed:D"],
      list: ["file2"],
      info: { "": byName("file2", "D") },
    },
  ];

  const wantNames = (m: Mode) => (m.list === "error" ? [] : m.list.map((e) => (typeof e === "string" ? e : e[0])));
  const wantDesc = (m: Mode, name: string) => {
    if (m.list === "error") return undefined;
    const e = m.list.find((x) => (typeof x === "string" ? x : x[0]) === name);
    return typeof e === "string" || e === undefined ? undefined : e[1];
  };
  const same = (m: Mode, got: string[]) => (m.ordered ? got : sorted(got));
  const expected = (m: Mode) => (m.ordered ? wantNames(m) : sorted(wantNames(m)));

  for (const m of MODES) describe(`exportname filter: ${m.title}`, () => {
    let srv: RunningServer;
    beforeAll(async () => {
      srv = await startServer(["--filter=exportname", "file", `dir=${DIR}`, ...m.args]);
    });
    afterAll(async () => {
      await srv?.stop();
    });

    it("nbdinfo --list and --list --json show the expected names and descriptions", async () => {
      if (m.list === "error") {
        const r = await run("nbdinfo", ["--list", "--json", srv.uri]);
        expect(r.code).not.toBe(0);
        expect(r.stderr).toMatch(/server replied with error to list request/);
        return;
      }
      const bad = m.unopenable ?? [];
      const openable = m.nbdinfoNames ?? expected(m).filter((n) => !bad.includes(n));
      if (bad.length === 0) {
        const j = await nbdinfoJson(srv.uri);
        expect(same(m, j.exports.map((e) => e["export-name"]))).toEqual(openable);
        for (const e of j.exports) expect(e.description, e["export-name"]).toBe(wantDesc(m, e["export-name"]));
      } else {
        // nbdinfo opens each listed export: the refused ones fail the command.
        const r = await run("nbdinfo", ["--list", "--json", srv.uri]);
        expect(r.code).not.toBe(0);
        for (const n of bad) {
          const which = n === "" ? "the default export" : `export: ${n}`;
          expect(r.stderr).toMatch(new RegExp(`error to opt_go request: No such file or directory for ${which}$`, "m"));
        }
      }
      const text = (await run("nbdinfo", ["--list", srv.uri])).stdout;
      expect(same(m, [...text.matchAll(/^export="([^"]*)":$/gm)].map((x) => x[1]!))).toEqual(openable);
      for (const n of openable) {
        const d = wantDesc(m, n);
        if (d !== undefined && !d.includes("\n")) expect(text).toContain(`export="${n}":\n\tdescription: ${d}\n`);
      }
    });

    it("nbdsh opt_list and opt_info (set_full_info) agree: names, descriptions, canonical names, refusals", async () => {
      const p = await probe(srv.uri, Object.keys(m.info));
      if (m.list === "error") {
        expect(p.list).toBeNull();
      } else {
        expect(same(m, p.list!.map(([n]) => n))).toEqual(expected(m));
        for (const [n, d] of p.list!) expect(d, n).toBe(wantDesc(m, n) ?? "");
      }
      for (const [name, want] of Object.entries(m.info)) {
        const got = p.info[name]!;
        if (want === "refused") {
          expect(got, `opt_info(${JSON.stringify(name)})`).toEqual({ errno: ENOENT });
          continue;
        }
        expect(got, `opt_info(${JSON.stringify(name)})`).toMatchObject({
          canonical: want.canonical,
          size: CONTENT[want.canonical]!.length,
          description: want.description ?? null,
        });
      }
    });
  });

  describe("exportname filter: the default export maps to the plugin's export (data and canonical name)", () => {
    let srv: RunningServer;
    beforeAll(async () => {
      srv = await startServer(["--filter=exportname", "file", `dir=${DIR}`, "default-export=file2"]);
    });
    afterAll(async () => {
      await srv?.stop();
    });

    it("nbdsh with set_full_info(True): get_canonical_export_name() of \"\" is file2, and pread of \"\" reads file2", async () => {
      const code = `
import json
h.set_full_info(True)
h.set_export_name("")
h.opt_go()
print(json.dumps({"canonical": h.get_canonical_export_name(), "data": h.pread(h.get_size(), 0).hex()}))
`;
      const out = JSON.parse((await nbdsh(["--opt-mode", "-u", srv.uri, "-c", code])).trim()) as { canonical: string; data: string };
      expect(out.canonical).toBe("file2");
      expect(Buffer.from(out.data, "hex").equals(CONTENT.file2!)).toBe(true);
    });

    it("nbdcopy of the default export (URI without a name) equals file2", async () => {
      expect((await nbdcopyRead(srv.uri)).equals(CONTENT.file2!)).toBe(true);
    });

    it("raw NBD_OPT_INFO/GO of \"\" with NBD_INFO_NAME gets the canonical name; a named export gets its own name back", async () => {
      const c = await RawConn.connect(srv.sock);
      await handshake(c);
      expect(await rawGo(c, "", [INFO_NAME], OPT.INFO)).toMatchObject({ type: REP.ACK, name: "file2" });
      expect(await rawGo(c, "file3", [INFO_NAME], OPT.INFO)).toMatchObject({ type: REP.ACK, name: "file3" });
      // Without the request, no NBD_INFO_NAME is sent.
      expect(await rawGo(c, "", [], OPT.INFO)).toMatchObject({ type: REP.ACK, name: undefined });
      await goodGoStillWorks(c, "", CONTENT.file2!);
    });
  });

  describe("exportname filter, exportname-strict=true: refusals leave the connection usable", () => {
    let srv: RunningServer;
    beforeAll(async () => {
      srv = await startServer(["--filter=exportname", "file", `dir=${DIR}`, "exportname-strict=true", "exportname=file3"]);
    });
    afterAll(async () => {
      await srv?.stop();
    });

    it("GO of an existing but unlisted file, of \"\" and of traversal names gets NBD_REP_ERR_UNKNOWN; then GO file3 works", async () => {
      const c = await RawConn.connect(srv.sock);
      await handshake(c);
      for (const name of ["file1", "file2", "", "../secret", "/etc/passwd", "a/../../b"]) {
        expect((await rawGo(c, name)).type, JSON.stringify(name)).toBe(REP.ERR_UNKNOWN);
      }
      expect((await rawGo(c, Buffer.from("file3\0"))).type).toBe(REP.ERR_INVALID);
      await goodGoStillWorks(c, "file3", CONTENT.file3!);
    });

    it("NBD_OPT_EXPORT_NAME of an unlisted name ends that connection (there is no error reply), others keep serving", async () => {
      const c = await RawConn.connect(srv.sock);
      await handshake(c);
      c.write(encodeOption(OPT.EXPORT_NAME, Buffer.from("file1")));
      expect(await c.waitClosed(10_000)).toBe(true);
      expect((await nbdcopyRead(srv.uriFor("file3"))).equals(CONTENT.file3!)).toBe(true);
    });
  });

  describe("option budget", () => {
    let srv: RunningServer;
    beforeAll(async () => {
      srv = await startServer(["file", `dir=${DIR}`]);
    });
    afterAll(async () => {
      await srv?.stop();
    });

    it(`300 NBD_OPT_LIST on one connection: ${OPTION_BUDGET} + 4 per listed export are answered, then the server cuts the connection and keeps serving others [nbdkit: its own budget]`, async () => {
      // A connection already in transmission before the flood.
      const before = await openTransmission(srv.sock, "file1");
      const c = await RawConn.connect(srv.sock);
      await handshake(c);
      let answered = 0;
      let cut = false;
      for (let i = 0; i < 300; i++) {
        try {
          const r = await rawList(c);
          if (i > 0 && isNbdkit) {
            expect(r.type).toBe(REP.ERR_INVALID); // nbdkit lists once per connection
          } else {
            expect(r.type).toBe(REP.ACK);
            expect(sorted(r.names)).toEqual(DIR_EXPORTS);
          }
          answered++;
        } catch (e) {
          if (!(e instanceof RawClosedError)) throw e;
          cut = true;
          break;
        }
      }
      expect(cut).toBe(true);
      if (!isNbdkit) expect(answered).toBe(OPTION_BUDGET + 4 * DIR_EXPORTS.length);
      c.destroy();
      // The older connection still reads, and a new one negotiates and reads.
      expect(await rawRead(before.conn, 0, 4096)).toEqual(CONTENT.file1);
      rawDisconnect(before.conn);
      const after = await openTransmission(srv.sock, "file2");
      expect(await rawRead(after.conn, 0, 4096)).toEqual(CONTENT.file2!.subarray(0, 4096));
      rawDisconnect(after.conn);
      expect(srv.exited).toBe(false);
    });

    it.skipIf(isNbdkit)("every option counts, INFO too; the budget grows by 4 per export of the largest listing (nbdinfo --list asks per export)", async () => {
      const c = await RawConn.connect(srv.sock);
      await handshake(c);
      let answered = 0;
      try {
        for (let i = 0; i < 2 * OPTION_BUDGET + 10; i++) {
          if (i % 2) expect((await rawList(c)).type).toBe(REP.ACK);
          else expect((await rawGo(c, "file1", [], OPT.INFO)).type).toBe(REP.ACK);
          answered++;
        }
      } catch (e) {
        if (!(e instanceof RawClosedError)) throw e;
      }
      // LISTs and INFOs both counted; the listing (of DIR_EXPORTS) raised the budget.
      expect(answered).toBe(OPTION_BUDGET + 4 * DIR_EXPORTS.length);
      c.destroy();
    });
  });

  // -------------------------------------------------------------------------
  // With a plugin written for the test (a .mjs file: nbdstate only): plugin
  // descriptions through the exportname filter, and bounds on listings.

  describe.skipIf(isNbdkit)("a plugin of the test's own (listing.mjs)", () => {
    let dir: string;
    let plugin: string;
    beforeAll(() => {
      dir = makeTmpDir("nbdstate-listing-");
      plugin = join(dir, "listing.mjs");
      writeFileSync(
        plugin,
        `import { appendFileSync } from "node:fs";
let count = 3, namelen = 0, desclen = 0, desc = "", log = "";
export default {
  name: "listing",
  config(k, v) {
    if (k === "count") count = Number(v);
    else if (k === "namelen") namelen = Number(v);
    else if (k === "desclen") desclen = Number(v);
    else if (k === "desc") desc = v;
    else if (k === "log") log = v;
    else throw new Error("listing: unknown parameter " + k);
  },
  listExports() {
    if (log) appendFileSync(log, "list\\n");
    return Array.from({ length: count }, (_, i) => {
      const name = ("e" + i).padEnd(namelen, "x");
      if (desclen) return { name, description: "d".repeat(desclen) };
      return desc ? { name, description: desc + " " + name } : { name };
    });
  },
  defaultExport: () => "e0",
  open: (_ro, name) => ({ name }),
  getSize: () => 4096,
  pread: (_h, buf) => { buf.fill(0x5a); },
  exportDescription: (h) => (desc ? desc + " " + h.name + " (open)" : null),
};
`,
      );
    });
    afterAll(() => removeTmpDir(dir));

    it("plugin descriptions reach NBD_OPT_LIST and NBD_INFO_DESCRIPTION; the default \"\" is the plugin's e0", async () => {
      const srv = await startServer([plugin, "desc=Disk"]);
      try {
        const j = await nbdinfoJson(srv.uri);
        expect(j.exports.map((e) => [e["export-name"], e.description])).toEqual([
          ["e0", "Disk e0"], ["e1", "Disk e1"], ["e2", "Disk e2"],
        ]);
        const p = await probe(srv.uri, ["", "e2"]);
        expect(p.info[""]).toEqual({ canonical: "e0", description: "Disk e0 (open)", size: 4096 });
        expect(p.info.e2).toEqual({ canonical: "e2", description: "Disk e2 (open)", size: 4096 });
      } finally {
        await srv.stop();
      }
    });

    it("exportname filter exportdesc=keep passes plugin descriptions through; exportdesc=none drops them everywhere", async () => {
      const keep = await startServer(["--filter=exportname", plugin, "desc=Disk", "exportdesc=keep"]);
      const none = await startServer(["--filter=exportname", plugin, "desc=Disk", "exportdesc=none"]);
      try {
        expect((await probe(keep.uri, ["e1"])).info.e1).toMatchObject({ description: "Disk e1 (open)" });
        expect((await probe(keep.uri)).list).toEqual([["e0", "Disk e0"], ["e1", "Disk e1"], ["e2", "Disk e2"]]);
        const p = await probe(none.uri, ["e1", ""]);
        expect(p.list).toEqual([["e0", ""], ["e1", ""], ["e2", ""]]);
        expect(p.info.e1).toEqual({ canonical: "e1", description: null, size: 4096 });
        expect(p.info[""]).toEqual({ canonical: "e0", description: null, size: 4096 });
        const text = (await runOk("nbdinfo", ["--list", none.uri])).stdout;
        expect(text).not.toMatch(/description:/);
      } finally {
        await keep.stop();
        await none.stop();
      }
    });

    it("a listing of 10001 exports is refused (NBD_REP_ERR_PLATFORM) and GO still works on the same connection; 10000 are listed", async () => {
      const srv = await startServer([plugin, "count=10001"]);
      const srv2 = await startServer([plugin, "count=10000"]);
      try {
        const c = await RawConn.connect(srv.sock);
        await handshake(c);
        const r = await rawList(c);
        expect(r.type).toBe(REP.ERR_PLATFORM);
        expect(r.names).toEqual([]);
        expect((await rawGo(c, "")).type).toBe(REP.ACK);
        expect(await rawRead(c, 0, 16)).toEqual(Buffer.alloc(16, 0x5a));
        rawDisconnect(c);
        // (Not nbdinfo --list: it opens each listed export, and 10000 NBD_OPT_INFO
        // would run into the option budget.)
        const c2 = await RawConn.connect(srv2.sock);
        await handshake(c2);
        const r2 = await rawList(c2);
        expect(r2.type).toBe(REP.ACK);
        expect(r2.names).toHaveLength(10000);
        expect(new Set(r2.names).size).toBe(10000);
        c2.destroy();
      } finally {
        await srv.stop();
        await srv2.stop();
      }
    });

    it("a client that sends NBD_OPT_LIST after NBD_OPT_LIST without reading the replies does not make the server buffer them (back-pressure)", async () => {
      const log = join(dir, "lists.log");
      // About 1 MiB per listing: far more than a socket buffer holds.
      const srv = await startServer([plugin, "count=250", "namelen=4000", `log=${log}`]);
      const N = 20;
      try {
        const c = await RawConn.connect(srv.sock);
        await handshake(c);
        c.socket.pause(); // RawConn would otherwise read everything into its own buffer
        for (let i = 0; i < N; i++) c.write(encodeOption(OPT.LIST));
        await sleep(2000);
        const listed = () => (existsSync(log) ? readFileSync(log, "utf8").split("\n").length - 1 : 0);
        // Stuck writing the first listing or two until the client reads.
        expect(listed()).toBeLessThanOrEqual(2);
        // Reading lets it go on: every listing arrives, complete.
        c.socket.resume();
        for (let i = 0; i < N; i++) {
          const r = await readListReplies(c);
          expect(r.type).toBe(REP.ACK);
          expect(r.names).toHaveLength(250);
        }
        expect(listed()).toBe(N);
        expect((await rawGo(c, "e9")).type).toBe(REP.ACK);
        rawDisconnect(c);
      } finally {
        await srv.stop();
      }
    });
  });
});
