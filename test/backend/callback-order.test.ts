// nbdkit's callback order through a stack of a plugin and three filters:
// load inner->outer; config and configComplete outer->inner; getReady and
// afterFork inner->outer; open outer->inner; prepare inner->outer;
// finalize and close outer->inner; cleanup of every layer, then unload of
// every layer, each outer->inner.
import { describe, expect, it } from "vitest";
import { Stack } from "../../src/backend/stack.js";
import type { Filter, Plugin } from "../../src/backend/types.js";

function loggingPlugin(log: string[]): Plugin {
  return {
    name: "p",
    load: () => void log.push("p.load"),
    unload: () => void log.push("p.unload"),
    config: (k) => void log.push(`p.config ${k}`),
    configComplete: () => void log.push("p.configComplete"),
    getReady: () => void log.push("p.getReady"),
    afterFork: () => void log.push("p.afterFork"),
    cleanup: () => void log.push("p.cleanup"),
    open: () => (log.push("p.open"), {}),
    prepare: () => void log.push("p.prepare"),
    finalize: () => void log.push("p.finalize"),
    close: () => void log.push("p.close"),
    getSize: () => 1024,
    pread: (_h, buf) => void buf.fill(1),
  };
}

function loggingFilter(name: string, log: string[]): Filter {
  return {
    name,
    load: () => void log.push(`${name}.load`),
    unload: () => void log.push(`${name}.unload`),
    config: (next, k, v) => {
      log.push(`${name}.config ${k}`);
      return next(k, v);
    },
    configComplete: (next) => {
      log.push(`${name}.configComplete`);
      return next();
    },
    getReady: () => void log.push(`${name}.getReady`),
    afterFork: () => void log.push(`${name}.afterFork`),
    cleanup: () => void log.push(`${name}.cleanup`),
    open: async (a) => {
      log.push(`${name}.open`);
      await a.next();
      return {};
    },
    prepare: () => void log.push(`${name}.prepare`),
    finalize: () => void log.push(`${name}.finalize`),
    close: () => void log.push(`${name}.close`),
  };
}

describe("callback order through a plugin and three filters", () => {
  it("follows nbdkit's order for global and per-connection callbacks", async () => {
    const log: string[] = [];
    const stack = new Stack(loggingPlugin(log), [loggingFilter("f1", log), loggingFilter("f2", log), loggingFilter("f3", log)]);
    await stack.load();
    await stack.config("k", "v");
    await stack.configComplete();
    await stack.getReady();
    await stack.afterFork();
    const opened = await stack.open(false, "", false);
    const buf = Buffer.alloc(4);
    await opened.ctx.pread(buf, 0, 0);
    expect([...buf]).toEqual([1, 1, 1, 1]);
    await stack.close(opened);
    await stack.unload();
    expect(log).toEqual([
      "p.load", "f3.load", "f2.load", "f1.load",
      "f1.config k", "f2.config k", "f3.config k", "p.config k",
      "f1.configComplete", "f2.configComplete", "f3.configComplete", "p.configComplete",
      "p.getReady", "f3.getReady", "f2.getReady", "f1.getReady",
      "p.afterFork", "f3.afterFork", "f2.afterFork", "f1.afterFork",
      "f1.open", "f2.open", "f3.open", "p.open",
      "p.prepare", "f3.prepare", "f2.prepare", "f1.prepare",
      "f1.finalize", "f2.finalize", "f3.finalize", "p.finalize",
      "f1.close", "f2.close", "f3.close", "p.close",
      "f1.cleanup", "f2.cleanup", "f3.cleanup", "p.cleanup",
      "f1.unload", "f2.unload", "f3.unload", "p.unload",
    ]);
    expect(stack.layers.map((l) => l.state)).toEqual(["unloaded", "unloaded", "unloaded", "unloaded"]);
  });

  it("closes without finalize when the connection failed", async () => {
    const log: string[] = [];
    const stack = new Stack(loggingPlugin(log), [loggingFilter("f1", log)]);
    await stack.load();
    await stack.configComplete();
    await stack.getReady();
    await stack.afterFork();
    const opened = await stack.open(false, "", false);
    log.length = 0;
    await stack.close(opened, false);
    expect(log).toEqual(["f1.close", "p.close"]);
  });

  it("closes the layers below when a filter's prepare fails, without finalizing", async () => {
    const log: string[] = [];
    const f = loggingFilter("f1", log);
    f.prepare = () => {
      throw new Error("prepare failed");
    };
    const stack = new Stack(loggingPlugin(log), [f]);
    await stack.load();
    await stack.configComplete();
    await stack.getReady();
    await stack.afterFork();
    log.length = 0;
    await expect(stack.open(false, "", false)).rejects.toThrow("prepare failed");
    expect(log).toEqual(["f1.open", "p.open", "p.prepare", "f1.close", "p.close"]);
  });

  it("refuses a filter-owned context before afterFork, with a clear message", async () => {
    const stack = new Stack(loggingPlugin([]), [loggingFilter("f1", [])]);
    await stack.load();
    await stack.configComplete();
    await expect(stack.layers[1]!.asLower().open({})).rejects.toThrow(/only from afterFork until unload/);
  });
});
