// A Stack brought up the way the command line does it, in process: load,
// config each (key, value) in order, configComplete, getReady, afterFork.
import { Stack } from "../../src/backend/stack.js";
import type { Filter, Plugin } from "../../src/backend/types.js";

export async function runningStack(plugin: Plugin, filters: Filter[] = [], params: [string, string][] = []): Promise<Stack> {
  const stack = new Stack(plugin, filters);
  await stack.load();
  for (const [k, v] of params) await stack.config(k, v);
  await stack.configComplete();
  await stack.getReady();
  await stack.afterFork();
  return stack;
}

/** A running stack and a context opened through it (as a client's), for data calls with the stack's checks. */
export async function openThroughStack(plugin: Plugin, params: [string, string][] = [], filters: Filter[] = [], readonly = false) {
  const stack = await runningStack(plugin, filters, params);
  const opened = await stack.open(readonly, "", false);
  return { stack, opened, ctx: opened.ctx };
}
