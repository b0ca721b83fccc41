import { createTestModel } from "@xstate/graph";
import { sharedHandleMachine } from "../src/machines/shared-handle.js";
for (const maxRefs of [1, 2]) for (const c of [true, false]) {
  const t0 = Date.now();
  const tm = createTestModel(sharedHandleMachine, { input: { maxRefs, closeOnLastRelease: c } } as any);
  const sp = tm.getSimplePaths();
  console.log(maxRefs, c, sp.length, sp.reduce((a, p) => a + p.steps.length, 0), Date.now() - t0);
}
