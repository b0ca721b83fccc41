// Model-based test of the transmission phase edges: every simple path of
// the transmission machine (@xstate/graph) is replayed against an
// in-process server, always with requests in flight (reads held at a gate
// in the plugin) and a second, bystander connection:
//   NBD_CMD_DISC    raw DISC while reads are in flight
//   SHUTDOWN        startServer's shutdown()
//   FATAL           28 bytes with a bad request magic
//   REPLIES_DRAINED the gate opens: every owed reply arrives, then the close
//   CLIENT_CLOSED   the client hangs up with reads in flight
// A real socket's hang-up reaches the server as EOF first, which looks like
// a half-close (drain, then close): the checks are on outcomes, not on the
// exact phase in between.
import { createTestModel } from "@xstate/graph";
import { describe, expect, it } from "vitest";
import type { SnapshotFrom } from "xstate";
import { NbdClient } from "../../src/client/index.js";
import { transmissionMachine } from "../../src/machines/transmission.js";
import * as C from "../../src/protocol/constants.js";
import { encodeRequest } from "../../src/protocol/wire.js";
import { canConnect, waitFor } from "../helpers/server.js";
import { startInProcess, type InProcess } from "./inproc.js";

type Snap = SnapshotFrom<typeof transmissionMachine>;
const K = 3; // reads held in flight
const pattern = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff));

interface Walk {
  t: InProcess;
  main: NbdClient;
  bystander: NbdClient;
  reads: { status: "pending" | "ok" | "failed"; value?: Buffer }[];
  release: () => void;
  shutdown?: Promise<void>;
  clientGone: boolean;
}

const mainStatus = (w: Walk) => w.t.srv.connections().find((c) => c.id === "conn-1");

async function setUp(): Promise<Walk> {
  const t = await startInProcess({ threads: 16 });
  const main = await NbdClient.open({ path: t.sock });
  const bystander = await NbdClient.open({ path: t.sock });
  await main.pwrite(pattern(K * 512, 1), 0);
  const release = t.holdReads();
  const w: Walk = { t, main, bystander, reads: [], release, clientGone: false };
  for (let i = 0; i < K; i++) {
    const r: Walk["reads"][number] = { status: "pending" };
    main.pread(512, i * 512).then((v) => Object.assign(r, { status: "ok", value: v }), () => (r.status = "failed"));
    w.reads.push(r);
  }
  expect(await waitFor(() => t.ctl.reads === K, 3000, 2), "the reads reach the plugin").toBe(true);
  return w;
}

function events(w: Walk) {
  const toDraining = async () => {
    expect(await waitFor(() => mainStatus(w)?.phase === "DRAINING", 3000, 2), `phase ${mainStatus(w)?.phase}`).toBe(true);
  };
  return {
    NBD_CMD_DISC: async () => {
      w.main.raw.send({ type: C.NBD_CMD_DISC });
      await toDraining();
    },
    SHUTDOWN: async () => {
      w.shutdown = w.t.srv.shutdown();
      await toDraining();
      expect(await canConnect({ path: w.t.sock }), "no new connections once shutting down").toBe(false);
    },
    FATAL: async () => {
      w.main.raw.writeRaw(encodeRequest(0, C.NBD_CMD_READ, 99n, 0, 512).fill(0xee, 0, 4));
      await toDraining();
    },
    REPLIES_DRAINED: async () => {
      w.release();
      await w.main.closed;
    },
    CLIENT_CLOSED: async () => {
      w.clientGone = true;
      w.main.destroy();
      w.release();
      expect(await waitFor(() => mainStatus(w) === undefined, 3000, 2), "the server forgets the connection").toBe(true);
    },
  };
}

function check(w: Walk, s: Snap): void {
  const st = mainStatus(w);
  switch (s.value) {
    case "SERVING":
      expect(st?.phase).toBe("SERVING");
      expect(st?.inFlight).toBe(K);
      break;
    case "DRAINING":
      // Requests owed are still owed: nothing answered, nothing closed.
      expect(st?.inFlight).toBe(K);
      expect(w.main.phase).toBe("transmission");
      expect(w.reads.map((r) => r.status)).toEqual(Array(K).fill("pending"));
      break;
    case "CLOSED":
      expect(st).toBeUndefined();
      expect(w.main.phase).toBe("closed");
      if (w.clientGone) break;
      // Every reply arrived, with the right data, before the socket closed.
      expect(w.reads.map((r) => r.status)).toEqual(Array(K).fill("ok"));
      w.reads.forEach((r, i) => expect(r.value).toEqual(pattern(K * 512, 1).subarray(i * 512, (i + 1) * 512)));
  }
}

async function tearDown(w: Walk): Promise<void> {
  const { t } = w;
  if (w.shutdown) {
    await w.shutdown;
    expect(w.bystander.phase, "shutdown drains and closes every connection").toBe("closed");
  } else {
    // Whatever happened to the first connection, the other one keeps serving.
    await w.bystander.pwrite(pattern(512, 9), 4096);
    expect(await w.bystander.pread(512, 4096)).toEqual(pattern(512, 9));
    await w.bystander.disconnect();
  }
  expect(await t.idle()).toBe(true);
  expect(t.ctl.closes, "every context opened was closed").toBe(t.ctl.opens);
  expect(t.ctl.log.filter((m) => /TypeError|ReferenceError|Unhandled/.test(m))).toEqual([]);
  await t.stop();
}

describe("transmission machine model over a real socket, requests in flight", () => {
  const model = createTestModel(transmissionMachine);
  const paths = model.getSimplePaths();

  it("has every phase edge on some path", () => {
    const edges = new Set(paths.flatMap((p) => p.steps.map((s) => s.event.type)));
    expect([...edges].sort()).toEqual(["CLIENT_CLOSED", "FATAL", "NBD_CMD_DISC", "REPLIES_DRAINED", "SHUTDOWN", "xstate.init"]);
    expect(paths.length).toBe(7);
  });

  for (const path of paths) {
    it(path.description, async () => {
      const w = await setUp();
      try {
        await path.test({ events: events(w), states: { "*": (s) => check(w, s as Snap) } });
      } finally {
        w.release();
        w.main.destroy();
      }
      await tearDown(w);
    }, 20_000);
  }

  it("server shutdown while draining after DISC: in-flight requests are still answered", async () => {
    const w = await setUp();
    const ev = events(w);
    await ev.NBD_CMD_DISC();
    w.shutdown = w.t.srv.shutdown();
    let done = false;
    void w.shutdown.then(() => (done = true));
    await new Promise((r) => setTimeout(r, 50));
    expect(done, "shutdown waits for the owed replies").toBe(false);
    check(w, { value: "DRAINING" } as Snap);
    await ev.REPLIES_DRAINED();
    check(w, { value: "CLOSED" } as Snap);
    await tearDown(w);
  });

  it("half-close after DISC (libnbd's shutdown): every owed reply, then EOF", async () => {
    const w = await setUp();
    w.main.raw.send({ type: C.NBD_CMD_DISC });
    w.main.stream.end();
    await new Promise((r) => setTimeout(r, 50));
    check(w, { value: "DRAINING" } as Snap);
    await events(w).REPLIES_DRAINED();
    check(w, { value: "CLOSED" } as Snap);
    await tearDown(w);
  });
});
