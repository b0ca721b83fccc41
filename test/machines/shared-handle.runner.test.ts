// Named edge cases of the REAL SharedHandle runner (src/backend/shared-handle.ts).
import { describe, expect, it } from "vitest";
import type { InspectionEvent } from "xstate";
import { SharedHandle } from "../../src/backend/shared-handle.js";
import { NbdError } from "../../src/backend/types.js";
import { NBD_ESHUTDOWN } from "../../src/protocol/constants.js";
import { flush, Harness } from "./helpers.js";

describe("SharedHandle runner", () => {
  it("acquire before afterFork is rejected and opens nothing", async () => {
    const h = new Harness();
    const a = h.acquire();
    await flush();
    expect(a.status).toBe("rejected");
    expect(a.error?.message).toMatch(/before afterFork/);
    expect(a.error).toBeInstanceOf(NbdError);
    expect(h.opens).toBe(0);
    expect(h.sh.state).toBe("dormant");
  });

  it("acquire while opening waits and shares the one open", async () => {
    const h = new Harness();
    h.sh.afterFork();
    const a = h.acquire();
    const b = h.acquire();
    expect(h.sh.state).toBe("opening");
    expect(h.sh.waiting).toBe(2);
    const handle = await h.succeedOpen();
    expect(h.opens).toBe(1);
    expect([a.status, b.status]).toEqual(["resolved", "resolved"]);
    expect(a.value).toBe(handle);
    expect(b.value).toBe(handle);
    expect(h.sh.refs).toBe(2);
    const c = h.acquire();
    await flush();
    expect(c.value).toBe(handle);
    expect(h.opens).toBe(1);
    expect(h.sh.refs).toBe(3);
  });

  it("open fails: every waiting acquirer gets the error, the next acquire retries", async () => {
    const h = new Harness();
    h.sh.afterFork();
    const a = h.acquire();
    const b = h.acquire();
    await h.failOpen("disk on fire");
    for (const o of [a, b]) {
      expect(o.status).toBe("rejected");
      expect(o.error?.message).toMatch(/open failed: disk on fire/);
    }
    expect(h.sh.state).toBe("idle");
    expect(h.sh.refs).toBe(0);
    expect(h.sh.lastError?.message).toBe("disk on fire");
    const c = h.acquire();
    expect(h.sh.state).toBe("opening");
    const handle = await h.succeedOpen();
    expect(h.opens).toBe(2);
    expect(c.value).toBe(handle);
  });

  it("release of the last reference while requests are in flight drains before close", async () => {
    const h = new Harness({ closeOnLastRelease: true });
    h.sh.afterFork();
    h.acquire();
    const handle = await h.succeedOpen();
    const finish = h.request();
    h.sh.release();
    await flush();
    expect(h.sh.state).toBe("closing");
    expect(h.sh.inFlight).toBe(1);
    expect(h.closes).toBe(0);
    await finish();
    expect(h.closes).toBe(1);
    expect(h.log).toEqual(["open", "request-done", `close#${handle.id}`]);
    await h.succeedClose();
    expect(h.sh.state).toBe("idle");
    expect(handle.closed).toBe(true);
  });

  it("without closeOnLastRelease the handle stays open after the last release", async () => {
    const h = new Harness();
    h.sh.afterFork();
    h.acquire();
    await h.succeedOpen();
    h.sh.release();
    expect(h.sh.state).toBe("open");
    expect(h.sh.refs).toBe(0);
    const b = h.acquire();
    await flush();
    expect(b.status).toBe("resolved");
    expect(h.opens).toBe(1);
    expect(h.closes).toBe(0);
  });

  it("unload while references are held: drain, then close; late use gets ESHUTDOWN", async () => {
    const h = new Harness();
    h.sh.afterFork();
    h.acquire();
    h.acquire();
    const handle = await h.succeedOpen();
    const finish = h.request();
    const u = h.unload();
    await flush();
    expect(h.sh.state).toBe("closing");
    expect(h.closes).toBe(0);
    expect(u.status).toBe("pending");
    await finish();
    expect(h.log).toEqual(["open", "request-done", `close#${handle.id}`]);
    await h.succeedClose();
    expect(h.sh.state).toBe("closed");
    expect(u.status).toBe("resolved");
    expect(h.sh.refs).toBe(2);
    await expect(h.sh.run(async () => 1)).rejects.toMatchObject({ errno: NBD_ESHUTDOWN });
    h.sh.release();
    h.sh.release();
    expect(h.sh.refs).toBe(0);
    expect(h.warnings).toEqual([]);
  });

  it("acquire while closing (last release) waits and reopens after the close", async () => {
    const h = new Harness({ closeOnLastRelease: true });
    h.sh.afterFork();
    h.acquire();
    const first = await h.succeedOpen();
    h.sh.release();
    await flush();
    expect(h.sh.state).toBe("closing");
    const b = h.acquire();
    expect(h.sh.waiting).toBe(1);
    await h.succeedClose();
    expect(h.sh.state).toBe("opening");
    expect(b.status).toBe("pending");
    const second = await h.succeedOpen();
    expect(b.value).toBe(second);
    expect(second).not.toBe(first);
    expect(b.handedClosed).toBe(false);
    expect(h.opens).toBe(2);
  });

  it("acquire while closing for unload is rejected", async () => {
    const h = new Harness();
    h.sh.afterFork();
    h.acquire();
    await h.succeedOpen();
    h.unload();
    const b = h.acquire();
    await flush();
    expect(b.status).toBe("rejected");
    expect(b.error?.message).toMatch(/after unload/);
  });

  it("acquire after unload is rejected with ESHUTDOWN", async () => {
    const h = new Harness();
    h.sh.afterFork();
    await h.sh.unload();
    expect(h.sh.state).toBe("closed");
    await expect(h.sh.acquire()).rejects.toMatchObject({ errno: NBD_ESHUTDOWN, message: /after unload/ });
    expect(h.opens).toBe(0);
    await h.sh.unload(); // a second unload resolves at once
  });

  it("unload before afterFork goes straight to closed", async () => {
    const h = new Harness();
    await h.sh.unload();
    expect(h.sh.state).toBe("closed");
    expect(h.opens + h.closes).toBe(0);
  });

  it("unload while opening waits for the open, rejects the waiters, then closes", async () => {
    const h = new Harness();
    h.sh.afterFork();
    const a = h.acquire();
    const u = h.unload();
    expect(h.sh.state).toBe("opening");
    const handle = await h.succeedOpen();
    expect(a.status).toBe("rejected");
    expect(a.error?.message).toMatch(/unloaded while opening/);
    expect(h.sh.state).toBe("closing");
    expect(h.log).toEqual(["open", `close#${handle.id}`]);
    await h.succeedClose();
    expect(u.status).toBe("resolved");
  });

  it("unload while opening when the open fails goes to closed without close", async () => {
    const h = new Harness();
    h.sh.afterFork();
    const a = h.acquire();
    const u = h.unload();
    await h.failOpen();
    expect(a.status).toBe("rejected");
    expect(h.sh.state).toBe("closed");
    expect(u.status).toBe("resolved");
    expect(h.closes).toBe(0);
  });

  it("release without a reference warns and changes nothing", () => {
    const h = new Harness();
    h.sh.afterFork();
    h.sh.release();
    expect(h.sh.state).toBe("idle");
    expect(h.sh.refs).toBe(0);
    expect(h.warnings).toEqual(["test: release without a reference (ignored)"]);
  });

  it("acquirers past maxRefs are rejected", async () => {
    const h = new Harness({ maxRefs: 1 });
    h.sh.afterFork();
    h.acquire();
    const b = h.acquire();
    await flush();
    expect(b.error?.message).toMatch(/too many references/);
    await h.succeedOpen();
    const c = h.acquire();
    await flush();
    expect(c.error?.message).toMatch(/too many references/);
    expect(h.sh.refs).toBe(1);
  });

  it("a failed close is reported and the handle moves on", async () => {
    const h = new Harness({ closeOnLastRelease: true });
    h.sh.afterFork();
    h.acquire();
    await h.succeedOpen();
    h.sh.release();
    await h.failClose("close boom");
    expect(h.sh.state).toBe("idle");
    expect(h.sh.lastError?.message).toBe("close boom");
    expect(h.warnings).toEqual(["test: close failed: close boom"]);
  });

  it("run() tracks a call on the open handle", async () => {
    const h = new Harness();
    h.sh.afterFork();
    h.acquire();
    const handle = await h.succeedOpen();
    await expect(h.sh.run(async (c) => c.id)).resolves.toBe(handle.id);
    expect(h.sh.inFlight).toBe(0);
  });

  it("an action that throws rejects pending work instead of an uncaughtException", async () => {
    const h = new Harness();
    h.sh.afterFork();
    const uncaught: unknown[] = [];
    const onUncaught = (e: unknown) => uncaught.push(e);
    process.on("uncaughtException", onUncaught);
    try {
      const a = h.acquire();
      // An ACQUIRE with no acquirer behind it: queueAcquire throws inside the actor.
      (h.sh as unknown as { actor: { send(e: { type: string }): void } }).actor.send({ type: "ACQUIRE" });
      await flush();
      expect(a.status).toBe("rejected");
      expect(a.error?.message).toMatch(/shared handle machine failed/);
      await expect(h.sh.acquire()).rejects.toThrow(/machine failed/);
      await expect(h.sh.unload()).rejects.toThrow(/machine failed/);
    } finally {
      process.off("uncaughtException", onUncaught);
    }
    expect(uncaught).toEqual([]);
  });

  it("passes the inspect option to the actor", async () => {
    const seen: string[] = [];
    const sh = new SharedHandle<number>({
      name: "inspected",
      open: async () => 7,
      close: async () => {},
      inspect: (ev: InspectionEvent) => {
        if (ev.type === "@xstate.event") seen.push(ev.event.type);
      },
    });
    sh.afterFork();
    await expect(sh.acquire()).resolves.toBe(7);
    expect(seen).toEqual(expect.arrayContaining(["AFTER_FORK", "ACQUIRE", "xstate.done.actor.openHandle"]));
  });
});
