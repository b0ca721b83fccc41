// The URLs -v prints are usable as printed: the NBD URI as nbdkit prints it
// (socket path not percent-encoded), and the status page URL with
// /status.json appended returns JSON, not the page.
import { spawn } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { freePort, makeTmpDir, NBDSTATE_BIN, runOk, sleep } from "../helpers/server.js";
import { requireTools, TOOLS } from "../helpers/tools.js";

describe.skipIf(!requireTools([TOOLS.nbdinfo]))("URLs printed by -v", () => {
  it("listening: nbd+unix:///?socket=/PATH (unencoded), and the status page URL + /status.json is JSON", async () => {
    const sock = join(makeTmpDir(), "s.sock");
    const port = await freePort();
    const child = spawn(process.execPath, [NBDSTATE_BIN, "-f", "-v", `--status-page=127.0.0.1:${port}`, "-U", sock, "memory", "1M"], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr!.on("data", (b: Buffer) => (stderr += b.toString()));
    try {
      const end = Date.now() + 15_000;
      while (!/listening: /.test(stderr) || !/status page: /.test(stderr)) {
        if (Date.now() > end || child.exitCode !== null) throw new Error(`no URLs printed:\n${stderr}`);
        await sleep(25);
      }
      const uri = /listening: (\S+)/.exec(stderr)![1]!;
      const page = /status page: (\S+)/.exec(stderr)![1]!;
      expect(uri).toBe(`nbd+unix:///?socket=${sock}`);
      expect((await runOk("nbdinfo", ["--size", uri])).stdout.trim()).toBe("1048576");
      expect(page).toBe(`http://127.0.0.1:${port}`);
      for (const url of [`${page}/status.json`, `${page}//status.json`]) {
        const res = await fetch(url);
        expect(res.headers.get("content-type")).toBe("application/json");
        expect(await res.json()).toHaveProperty("server.address");
      }
    } finally {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
    }
  });
});
