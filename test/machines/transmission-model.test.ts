// Model-based test of the transmission phase edges: every simple path of
// the transmission machine (paths.ts walk(): its outside events and the
// outcomes of what it invokes and waits for) is replayed against an
// in-process server, always with requests in flight (reads held at a gate
// in the plugin) and a second, bystander connection:
//   NBD_CMD_DISC               raw DISC while reads are in flight
//   INPUT_ENDED                the client half-closes (libnbd's shutdown)
//   FATAL                      28 bytes with a bad request magic
//   SHUTDOWN                   startServer's shutdown()
//   after SHUTDOWN_GRACE       the grace runs out (short here) with reads still held
//   done: awaitQuiet           the gate opens during a shutdown: the replies go out, the client is quiet
//   done: awaitReplies         the gate opens: every owed reply arrives, then the close
//   CLIENT_CLOSED              the client hangs up with reads in flight
// After every step the server's connection is in the path's state (its
// status says TRANSMISSION/STATE), and: what was owed is still owed while
// draining; requests sent during a shutdown get NBD_ESHUTDOWN without
// reaching the plugin; at the close every owed reply arrived with the right
// data (unless the client went away), and the export was closed.
import { describe, expect, it } from "vitest";
import { NbdClient } from "../../src/client/index.js";
import { transmissionMachine as m } from "../../src/machines/transmission.js";
import * as C from "../../src/protocol/constants.js";
import { encodeInfoRequest, encodeOption, encodeRequest } from "../../src/protocol/wire.js";
import { handshake, RawConn, readGreeting, readOptionReply, readSimpleReply } from "../helpers/raw.js";
import { canConnect, waitFor } from "../helpers/server.js";
import { startInProcess, type InProcess } from "./inproc.js";
import { allTransitions, taken, walk, type WalkPath } from "./paths.js";

const K = 3; // reads held in flight
const GRACE_MS = 1000; // the shutdown grace on paths that let it run out
const pattern = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff));
const GRACE = "xstate.after.SHUTDOWN_GRACE.transmission.SHUTTING_DOWN";
const QUIET = "xstate.done.actor.awaitQuiet";
const REPLIES = "xstate.done.actor.awaitReplies";

const walked = walk(m, [
  { type: "NBD_CMD_DISC" }, { type: "INPUT_ENDED" }, { type: "FATAL", reason: "bad request magic" }, { type: "SHUTDOWN" },
  { type: "CLIENT_CLOSED" }, { type: QUIET }, { type: REPLIES }, { type: GRACE },
]);
const types = (p: WalkPath) => p.steps.map((s) => s.event.type);
// Once the client is quiet after a shutdown nothing is in flight, so the
// replies owed are all queued at once and DRAINING ends as it starts: no
// client can hang up in between. The other paths take DRAINING + CLIENT_CLOSED.
const unreplayable = (p: WalkPath) => types(p).join(" ").includes(`${QUIET} CLIENT_CLOSED`);
const paths = walked.simple.filter((p) => !unreplayable(p));

interface Walk {
  t: InProcess;
  main: NbdClient;
  bystander: NbdClient;
  reads: { status: "pending" | "ok" | "failed"; value?: Buffer }[];
  released: boolean;
  release: () => void;
  shutdown?: Promise<void>;
  late?: Promise<number>;
  clientGone: boolean;
}

const mainStatus = (w: Walk) => w.t.srv.connections().find((c) => c.id === "conn-1");

async function setUp(shutdownGraceMs?: number): Promise<Walk> {
  const t = await startInProcess({ threads: 16, shutdownGraceMs });
  const main = await NbdClient.open({ path: t.sock });
  const bystander = await NbdClient.open({ path: t.sock });
  await main.pwrite(pattern(K * 512, 1), 0);
  const hold = t.holdReads();
  const w: Walk = { t, main, bystander, reads: [], released: false, release: () => {}, clientGone: false };
  w.release = () => {
    w.released = true;
    hold();
  };
  for (let i = 0; i < K; i++) {
    const r: Walk["reads"][number] = { status: "pending" };
    main.pread(512, i * 512).then((v) => Object.assign(r, { status: "ok", value: v }), () => (r.status = "failed"));
    w.reads.push(r);
  }
  expect(await waitFor(() => t.ctl.reads === K, 3000, 2), "the reads reach the plugin").toBe(true);
  return w;
}

function handlers(w: Walk): Record<string, () => Promise<void> | void> {
  return {
    "xstate.init": () => {},
    NBD_CMD_DISC: () => w.main.raw.send({ type: C.NBD_CMD_DISC }),
    INPUT_ENDED: () => void w.main.stream.end(),
    FATAL: () => w.main.raw.writeRaw(encodeRequest(0, C.NBD_CMD_READ, 99n, 0, 512).fill(0xee, 0, 4)),
    SHUTDOWN: () => {
      w.shutdown = w.t.srv.shutdown();
    },
    // The grace runs out by itself: the check waits for DRAINING.
    [GRACE]: () => {},
    [QUIET]: () => w.release(),
    [REPLIES]: async () => {
      w.release();
      await w.main.closed;
    },
    CLIENT_CLOSED: () => {
      w.clientGone = true;
      w.main.destroy();
      w.release();
    },
  };
}

async function inPhase(w: Walk, state: string, timeoutMs = 3000): Promise<void> {
  expect(await waitFor(() => mainStatus(w)?.phase === `TRANSMISSION/${state}`, timeoutMs, 2), `phase ${mainStatus(w)?.phase}, expected ${state}`).toBe(true);
}

async function check(w: Walk, state: string, event: string): Promise<void> {
  switch (state) {
    case "SERVING":
      await inPhase(w, "SERVING");
      expect(mainStatus(w)?.inFlight).toBe(K);
      break;
    case "SHUTTING_DOWN": {
      await inPhase(w, "SHUTTING_DOWN");
      expect(mainStatus(w)?.inFlight).toBe(K);
      expect(await canConnect({ path: w.t.sock }), "no new connections once shutting down").toBe(false);
      // "The error value issued in respect of ... any subsequently received requests SHOULD be NBD_ESHUTDOWN":
      // answered at once, without reaching the stack, while the owed reads are still held.
      const late = w.main.raw.request({ type: C.NBD_CMD_READ, offset: 0, length: 512 });
      w.late = late.then((r) => r.error);
      expect(await w.late).toBe(C.NBD_ESHUTDOWN);
      expect(w.t.ctl.reads, "the refused request did not reach the plugin").toBe(K);
      expect(w.reads.map((r) => r.status)).toEqual(Array(K).fill("pending"));
      break;
    }
    case "DRAINING":
      if (w.released) {
        // After a quiet shutdown: nothing owed, so DRAINING ends at once.
        expect(event).toBe(QUIET);
        expect(await waitFor(() => mainStatus(w) === undefined || mainStatus(w)?.phase === "TRANSMISSION/DRAINING", 3000, 2)).toBe(true);
        break;
      }
      // Requests owed are still owed: nothing answered, nothing closed.
      await inPhase(w, "DRAINING", event === GRACE ? GRACE_MS * 3 : 3000);
      expect(mainStatus(w)?.inFlight).toBe(K);
      expect(w.main.phase).toBe("transmission");
      expect(w.reads.map((r) => r.status)).toEqual(Array(K).fill("pending"));
      break;
    case "CLOSED":
      expect(await waitFor(() => mainStatus(w) === undefined, 3000, 2), "the server forgets the connection").toBe(true);
      await w.main.closed;
      expect(w.main.phase).toBe("closed");
      if (w.clientGone) break;
      // Every reply arrived, with the right data, before the socket closed.
      expect(w.reads.map((r) => r.status)).toEqual(Array(K).fill("ok"));
      w.reads.forEach((r, i) => expect(r.value).toEqual(pattern(K * 512, 1).subarray(i * 512, (i + 1) * 512)));
      break;
    default:
      throw new Error(`no check for ${state}`);
  }
}

async function tearDown(w: Walk): Promise<void> {
  const { t } = w;
  if (w.shutdown) {
    await w.shutdown;
    await w.bystander.closed;
    expect(w.bystander.phase, "shutdown drains and closes every connection").toBe("closed");
  } else {
    // Whatever happened to the first connection, the other one keeps serving.
    await w.bystander.pwrite(pattern(512, 9), 4096);
    expect(await w.bystander.pread(512, 4096)).toEqual(pattern(512, 9));
    await w.bystander.disconnect();
  }
  expect(await t.idle()).toBe(true);
  expect(t.ctl.closes, "every context opened was closed").toBe(t.ctl.opens);
  expect(t.ctl.log.filter((l) => /TypeError|ReferenceError|Unhandled|not provided/.test(l))).toEqual([]);
  await t.stop();
}

describe("transmission machine model over a real socket, requests in flight", () => {
  it("the paths take every transition of the machine; the one left out cannot happen", () => {
    expect(taken(paths)).toEqual(allTransitions(m).filter((t) => t !== "SERVING " && !t.startsWith("SERVING always")));
    expect(walked.simple.filter(unreplayable).map((p) => types(p).slice(1).join(" "))).toEqual([`SHUTDOWN ${QUIET} CLIENT_CLOSED`]);
    expect(paths.length).toBe(walked.simple.length - 1);
  });

  for (const path of paths) {
    it(path.description, async () => {
      const w = await setUp(types(path).includes(GRACE) ? GRACE_MS : undefined);
      try {
        const h = handlers(w);
        for (const step of path.steps) {
          const f = h[step.event.type];
          if (!f) throw new Error(`no handler for ${step.event.type}`);
          await f();
          await check(w, String(step.state.value), step.event.type);
        }
      } finally {
        w.release();
        if (!w.shutdown && !w.clientGone && w.main.phase !== "closed") w.main.destroy();
      }
      await tearDown(w);
    }, 20_000);
  }
});

describe("transmission edges beside the paths", () => {
  it("server shutdown while draining after DISC: the in-flight requests are still answered", async () => {
    const w = await setUp();
    const h = handlers(w);
    await h.NBD_CMD_DISC!();
    await check(w, "DRAINING", "NBD_CMD_DISC");
    w.shutdown = w.t.srv.shutdown();
    let done = false;
    void w.shutdown.then(() => (done = true));
    await new Promise((r) => setTimeout(r, 50));
    expect(done, "shutdown waits for the owed replies").toBe(false);
    await check(w, "DRAINING", "SHUTDOWN");
    await h[REPLIES]!();
    await check(w, "CLOSED", REPLIES);
    await tearDown(w);
  });

  it("half-close after DISC (libnbd's shutdown): every owed reply, then EOF", async () => {
    const w = await setUp();
    w.main.raw.send({ type: C.NBD_CMD_DISC });
    w.main.stream.end();
    await check(w, "DRAINING", "NBD_CMD_DISC");
    await handlers(w)[REPLIES]!();
    await check(w, "CLOSED", REPLIES);
    await tearDown(w);
  });
});

describe("a server shutdown reaches the phase each connection is in", () => {
  it("before the handshake is done: the connection just closes", async () => {
    const t = await startInProcess();
    const c = await RawConn.connect(t.sock);
    await readGreeting(c);
    expect(await waitFor(() => t.phases()[0] === "HANDSHAKE/AWAIT_CLIENT_FLAGS", 2000, 2), `phase ${t.phases()[0]}`).toBe(true);
    await t.srv.shutdown();
    expect(await c.waitClosed(2000)).toBe(true);
    await t.stop();
  });

  it("between options: the connection closes", async () => {
    const t = await startInProcess();
    const c = await RawConn.connect(t.sock);
    await handshake(c);
    expect(await waitFor(() => t.phases()[0] === "OPTIONS/AWAIT_OPTION", 2000, 2), `phase ${t.phases()[0]}`).toBe(true);
    await t.srv.shutdown();
    expect(await c.waitClosed(2000)).toBe(true);
    await t.stop();
  });

  it("during NBD_OPT_GO: the GO is answered; requests pipelined behind it are refused with NBD_ESHUTDOWN, then the quiet client is let go", async () => {
    const t = await startInProcess();
    const c = await RawConn.connect(t.sock);
    await handshake(c);
    const release = t.holdOpens();
    // The READ right behind the GO: the client does not wait for the ACK.
    c.write(Buffer.concat([encodeOption(C.NBD_OPT_GO, encodeInfoRequest("", [])), encodeRequest(0, C.NBD_CMD_READ, 5n, 0, 512)]));
    expect(await waitFor(() => t.phases()[0] === "OPTIONS/OPEN_EXPORT_GO", 2000, 2), `phase ${t.phases()[0]}`).toBe(true);
    const down = t.srv.shutdown();
    await new Promise((r) => setTimeout(r, 20));
    expect(t.phases()[0], "the option in progress is not cut short").toBe("OPTIONS/OPEN_EXPORT_GO");
    release();
    expect((await readOptionReply(c, 3000)).type).toBe(C.NBD_REP_INFO);
    expect((await readOptionReply(c, 3000)).type).toBe(C.NBD_REP_ACK);
    expect(await readSimpleReply(c, 3000)).toEqual({ error: C.NBD_ESHUTDOWN, handle: 5n });
    expect(t.ctl.reads, "the refused read did not reach the plugin").toBe(0);
    // Nothing in flight, nothing more sent: the server closes.
    expect(await c.waitClosed(3000)).toBe(true);
    await down;
    expect(t.ctl.opens).toBe(1);
    expect(t.ctl.closes, "the export opened for the GO was closed").toBe(1);
    expect(t.ctl.log.filter((l) => /closed:/.test(l))).toEqual(["conn-1: closed: the server is shutting down"]);
    await t.stop();
  });
});
