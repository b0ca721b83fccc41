// The small policy filters (fua, nozero, nocache, noextents, nofilter,
// noparallel, multi-conn) against nbdkit 1.32.5: the same command line
// under both servers must give the same nbdinfo --json flags and sizes,
// the same replies and errors to the same requests, and the same bytes.
// Then what nbdkit 1.32.5 lacks or gets wrong (readonly, rotational,
// fuamode=none, zeromode=emulate fastzeromode=ignore), against nbdstate.
import { describe, expect, it } from "vitest";
import { requirePythonLibnbd, requireTools, TOOLS } from "../helpers/tools.js";
import { checkSame, expectSame, runBoth, type Case, type Op } from "./policy-diff.js";
import { run } from "../helpers/server.js";

const ready = requireTools([TOOLS.nbdkit, TOOLS.nbdinfo]) && requirePythonLibnbd();
const MEM: string[] = ["memory", "1M"];
const FILE: Pick<Case, "plugin" | "files"> = { plugin: ["file", "$DIR/disk.img"], files: { "disk.img": Buffer.alloc(1 << 20) } };

/** Writes of every kind (with FUA and fast zero), then everything read back. */
const WRITES: Op[] = [
  ["pwrite", 0, 70000, 1],
  ["pwrite", 5000, 3000, 2, ["fua"]],
  ["zero", 8192, 8192],
  ["zero", 20000, 5000, ["fua"]],
  ["zero", 32768, 32768, ["nohole"]],
  ["zero", 65536, 65536, ["fast"]],
  ["trim", 131072, 65536],
  ["trim", 4096, 100, ["fua"]],
  ["flush"],
  ["pread", 0, 65536],
  ["extents", 0, 1 << 20],
  ["disk"],
];
/** The same without fast zero and block status (where the plugins alone already differ). */
const FILE_WRITES: Op[] = WRITES.filter((o) => o[0] !== "extents" && !JSON.stringify(o).includes("fast"));
const NO_EXTENTS: Op[] = WRITES.filter((o) => o[0] !== "extents");
const CACHE: Op[] = [["cache", 0, 65536], ["cache", 1000, 1]];

const same = (c: Case, ops: Op[] = WRITES) => checkSame(c, ops);
const sameR = (c: Case, ops: Op[] = WRITES) => expectSame(c, ops);

describe.skipIf(!ready)("fua filter: same as nbdkit", { concurrent: true }, () => {
  it.each(["emulate", "native", "force", "pass", "discard"])("fuamode=%s over memory: flags, replies, bytes", (m) =>
    same({ filters: ["fua"], plugin: MEM, params: [`fuamode=${m}`] }));
  it("default (fuamode=none) over memory: FUA is not advertised", async () => {
    const r = await sameR({ filters: ["fua"], plugin: MEM });
    expect(r.nbdstate.info!.can_fua).toBe(false);
    expect(r.nbdstate.info!.can_flush).toBe(true);
  });
  it.each(["emulate", "force", "discard"])("fuamode=%s over file: flags, replies, bytes", (m) =>
    same({ filters: ["fua"], ...FILE, params: [`fuamode=${m}`] }, FILE_WRITES));
  it("fuamode=native, read-only: flags and bytes", async () => {
    const r = await sameR({ filters: ["fua"], plugin: MEM, params: ["fuamode=native"], options: ["-r"] }, [["disk"]]);
    expect(r.nbdstate.info!.is_read_only).toBe(true);
  });
  it("an unknown fuamode stops the server", async () => {
    const r = await sameR({ filters: ["fua"], plugin: MEM, params: ["fuamode=sometimes"] });
    expect(r.nbdstate.startError).toMatch(/fua: unknown fuamode 'sometimes'/);
  });
});

describe.skipIf(!ready)("nozero filter: same as nbdkit", { concurrent: true }, () => {
  const modes: [string, string][] = [
    ["none", "default"], ["emulate", "default"], ["emulate", "none"], ["emulate", "slow"],
    ["notrim", "default"], ["notrim", "none"], ["notrim", "slow"], ["notrim", "ignore"],
    ["plugin", "default"], ["plugin", "none"], ["plugin", "slow"], ["plugin", "ignore"],
  ];
  // Zeroes written as data: nbdkit's memory plugin reports a page written
  // full of zeroes as "zero" in block status, nbdstate's as data, with or
  // without the filter; so those cases compare bytes, not block status.
  it.each(modes)("zeromode=%s fastzeromode=%s over memory", (z, f) =>
    same({ filters: ["nozero"], plugin: MEM, params: [`zeromode=${z}`, `fastzeromode=${f}`] }, z === "emulate" ? NO_EXTENTS : WRITES));
  it.each(["emulate", "plugin"])("zeromode=%s over file", (z) =>
    same({ filters: ["nozero"], ...FILE, params: [`zeromode=${z}`] }, FILE_WRITES));
  it("bad modes stop the server", async () => {
    await same({ filters: ["nozero"], plugin: MEM, params: ["zeromode=fast"] });
    const r = await sameR({ filters: ["nozero"], plugin: MEM, params: ["fastzeromode=never"] });
    expect(r.nbdstate.startError).toMatch(/nozero: unknown fastzeromode 'never'/);
  });
});

describe.skipIf(!ready)("nocache, noextents, nofilter: same as nbdkit", { concurrent: true }, () => {
  it.each(["none", "emulate", "nop", "no-op"])("cachemode=%s over memory", (m) =>
    same({ filters: ["nocache"], plugin: MEM, params: [`cachemode=${m}`] }, [...WRITES, ...CACHE]));
  it("cachemode=emulate over file", () => same({ filters: ["nocache"], ...FILE, params: ["cachemode=emulate"] }, CACHE));
  it("an unknown cachemode stops the server", () => same({ filters: ["nocache"], plugin: MEM, params: ["cachemode=yes"] }));
  it("noextents: written and unwritten areas all report as data", async () => {
    const r = await sameR({ filters: ["noextents"], plugin: MEM }, [
      ["pwrite", 40000, 10, 3], ["extents", 0, 1 << 20], ["extents", 100000, 5000, ["reqone"]], ["disk"],
    ]);
    expect(r.nbdstate.probe!.ops![1]).toEqual([[1 << 20, 0]]);
  });
  it("nofilter changes nothing", () => same({ filters: ["nofilter"], plugin: MEM }, [...WRITES, ...CACHE]));
});

describe.skipIf(!ready)("noparallel filter: same as nbdkit", { concurrent: true }, () => {
  it.each(["requests", "all-requests", "all_requests", "connections"])("serialize=%s", (m) =>
    same({ filters: ["noparallel"], plugin: MEM, params: [`serialize=${m}`] }));
  it("an unknown serialize mode stops the server", () => same({ filters: ["noparallel"], plugin: MEM, params: ["serialize=none"] }));

  it("serialize=connections: a second client waits until the first has gone", async () => {
    const hold = `
import nbd, sys, time, subprocess
h = nbd.NBD()
h.connect_uri(sys.argv[1])
# A second client must not get through while this one is connected.
second = subprocess.Popen(["nbdinfo", "--size", sys.argv[1]], stdout=subprocess.PIPE)
time.sleep(1.0)
print("blocked" if second.poll() is None else "through")
h.shutdown()
out, _ = second.communicate(timeout=20)
print("then", out.decode().strip())
`;
    const r = await runBoth({ filters: ["noparallel"], plugin: MEM, params: ["serialize=connections"] }, [], async (sock) => {
      const res = await run("/usr/bin/python3", ["-c", hold, `nbd+unix:///?socket=${sock}`], { timeoutMs: 30_000 });
      return res.stdout.trim();
    });
    expect(r.extra.nbdkit).toBe("blocked\nthen 1048576");
    expect(r.extra.nbdstate).toBe(r.extra.nbdkit);
  });
});

describe.skipIf(!ready)("multi-conn filter: same as nbdkit", { concurrent: true }, () => {
  const cases = [
    ["auto", "connection"], ["emulate", "connection"], ["plugin", "connection"], ["unsafe", "connection"],
    ["disable", "connection"], ["emulate", "fast"], ["emulate", "off"], ["plugin", "off"], ["auto", "conn"],
  ];
  it.each(cases)("multi-conn-mode=%s multi-conn-track-dirty=%s", (m, t) =>
    same({ filters: ["multi-conn"], plugin: MEM, params: [`multi-conn-mode=${m}`, `multi-conn-track-dirty=${t}`] }));
  it("emulate over file, by export name", () =>
    same({ filters: ["multi-conn"], ...FILE, params: ["multi-conn-mode=emulate", "multi-conn-exportname=true"] }, FILE_WRITES));
  it("bad values stop the server", async () => {
    await same({ filters: ["multi-conn"], plugin: MEM, params: ["multi-conn-mode=connection"] });
    await same({ filters: ["multi-conn"], plugin: MEM, params: ["multi-conn-track-dirty=always"] });
    await same({ filters: ["multi-conn"], plugin: MEM, params: ["multi-conn-exportname=maybe"] });
  });
});
