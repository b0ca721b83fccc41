// A plugin loaded from a path whose afterFork, getReady or configComplete
// throws stops the server before it serves: exit status 1 and one line on
// stderr naming the plugin and its error (as nbdkit: "nbdkit: PLUGIN:
// error"), no stack trace, nothing left listening.
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { isNbdkit, makeTmpDir, removeTmpDir, runCli } from "../helpers/server.js";

describe.skipIf(isNbdkit)("a plugin whose lifecycle callback throws", () => {
  const dir = makeTmpDir("nbdstate-failing-");
  afterAll(() => removeTmpDir(dir));

  for (const step of ["afterFork", "getReady", "configComplete"] as const) {
    it(`${step} throws: exit 1, one line naming the plugin and the error`, async () => {
      const file = join(dir, `${step}.ts`);
      writeFileSync(
        file,
        `const plugin = {
  name: "broken",
  open: () => ({}),
  getSize: () => 1048576,
  pread: (h: unknown, buf: Buffer) => { buf.fill(0); },
  ${step}: () => { throw new Error("the disk is on fire"); },
};
export default plugin;
`,
      );
      const sock = join(dir, `${step}.sock`);
      const r = await runCli(["-f", "-U", sock, file], { timeoutMs: 30_000 });
      expect(r.code, r.stderr).toBe(1);
      const lines = r.stderr.trim().split("\n");
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(/broken/);
      expect(lines[0]).toMatch(/the disk is on fire/);
      expect(lines[0]).not.toMatch(/\n\s+at /);
      expect(existsSync(sock), "no socket left behind").toBe(false);
    }, 40_000);
  }
});
