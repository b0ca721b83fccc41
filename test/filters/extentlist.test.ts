// The extentlist filter: block status from a file listing extents, gaps
// (and everything after the last one) holes that read as zeros.
// Differential against nbdkit's extentlist filter (exact block status, the
// map nbdinfo prints), then the file format's errors.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseExtentList } from "../../src/filters/extentlist/parse.js";
import { makeTmpDir, runCli, runOk } from "../helpers/server.js";
import { expectSameInfo, expectSameReplies, startPair, stateTools } from "./state-helpers.js";

const ok = stateTools();

const LIST = `1M 1M
0 64K 0
64K 192K hole,zero
3M 512s zero
2500K 100K 3
`;

describe.skipIf(!ok)("extentlist filter: the same command line as nbdkit", () => {
  it("-r over memory: flags, the map nbdinfo prints, and 200 random block status requests are equal", async () => {
    const dir = makeTmpDir();
    const list = join(dir, "extents");
    writeFileSync(list, LIST);
    const pair = await startPair(["-r", "--filter=extentlist", "memory", "4M", `extentlist=${list}`]);
    try {
      await expectSameInfo(pair);
      const [a, b] = await Promise.all(
        [pair.ours.uri, pair.ref.uri].map(async (u) => JSON.parse((await runOk("nbdinfo", ["--map", "--json", u])).stdout)),
      );
      expect(a).toEqual(b);
      expect(a[0]).toEqual({ offset: 0, length: 65536, type: 0, description: "data" });
      await expectSameReplies(pair, 41, 200, ["--ops=status,status,read", "--exact-status", "--maxlen=2000000"]);
    } finally {
      await pair.stop();
    }
  });
});

describe.skipIf(!ok)("extentlist filter: the file", () => {
  it("is sorted, gaps become holes, the end is a hole to 2^53", () => {
    expect(parseExtentList("# comment\n\n8 8 hole\n0 4\n", "f")).toEqual([
      { offset: 0, length: 4, type: 0 },
      { offset: 4, length: 4, type: 3 },
      { offset: 8, length: 8, type: 1 },
      { offset: 16, length: Number.MAX_SAFE_INTEGER - 16, type: 3 },
    ]);
    expect(() => parseExtentList("0 10\n5 10\n", "f")).toThrow(/overlapping/);
    expect(() => parseExtentList("0 10 purple\n", "f")).toThrow(/f:1: unknown extent type 'purple'/);
    expect(() => parseExtentList("0\n", "f")).toThrow(/f:1: cannot parse/);
    expect(() => parseExtentList("0 1Q\n", "f")).toThrow(/f:1: could not parse size/);
  });

  it("a missing parameter or a bad file stops the server at startup with one line", async () => {
    const dir = makeTmpDir();
    const bad = join(dir, "bad");
    writeFileSync(bad, "0 10\n5 10\n");
    for (const args of [[], [`extentlist=${join(dir, "nope")}`], [`extentlist=${bad}`], [`extentlist=${bad}`, `extentlist=${bad}`]]) {
      const r = await runCli(["-r", "--filter=extentlist", "memory", "1M", ...args, "--run", "true"]);
      expect(r.code, args.join(" ")).not.toBe(0);
      expect(r.stderr).toMatch(/extentlist: /);
      expect(r.stderr.trim().split("\n").length, r.stderr).toBe(1);
    }
  });
});
