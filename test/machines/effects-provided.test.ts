// Declared effects are provided: every machine names its side effects and
// invoked actors as stubs (src/machines/effects.ts), and each runner must
// supply every one. Checked three ways: what each machine declares; that
// every machine actor of a real server with a real client (server,
// connection, handshake, options, transmission) runs with nothing left a
// stub; and that a stub left in makes the runner refuse to start, rather
// than fail at the first client or, worse, mid-connection.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fromPromise, type AnyActorRef, type AnyStateMachine, type InspectionEvent } from "xstate";
import { ByteQueue } from "../../src/actors/byte-queue.js";
import { handshakeFor, optionsFor, type Wire } from "../../src/actors/negotiation.js";
import { NbdClient } from "../../src/client/index.js";
import { assertProvided, declaredAction, declaredActor, unprovided } from "../../src/machines/effects.js";
import { connectionMachine } from "../../src/machines/connection.js";
import { machines } from "../../src/machines/index.js";
import { transmissionMachine } from "../../src/machines/transmission.js";
import { builtinOptions } from "../../src/options/index.js";
import type { OptionRecord, OptionsIO } from "../../src/options/record.js";
import { startInProcess, type InProcess } from "./inproc.js";

const wire: Wire = { queue: new ByteQueue(), stream: () => { throw new Error("unused"); }, write: () => {} };
const io: Omit<OptionsIO, "reply" | "write"> = { backend: {} as never, readonly: false, noZeroes: false, log: () => {} };

/** A test option whose reply action nobody implements (it has no effects()). */
const noReply: OptionRecord = {
  option: 0x7e57_0001,
  event: "TEST_OPT_NO_REPLY",
  decode: () => ({}),
  transitions: [{ actions: "replyTest" }],
  actions: { replyTest: declaredAction("replyTest") },
};
/** A test option whose invoked effect nobody implements. */
const noActor: OptionRecord = {
  option: 0x7e57_0002,
  event: "TEST_OPT_NO_ACTOR",
  decode: () => ({}),
  transitions: [{ target: "TEST_WAITING" }],
  states: { TEST_WAITING: { invoke: { id: "testWork", src: "testWork", onDone: "AWAIT_OPTION" } } },
  actors: { testWork: declaredActor("testWork") },
};
/** The same option, with its effect provided. */
const withActor: OptionRecord = {
  ...noActor,
  effects: () => ({ actors: { testWork: fromPromise(async () => {}) } }),
};

describe("declared effects", () => {
  it("every machine declares its effects as stubs (a runner must provide them)", () => {
    for (const { id, machine } of machines) expect(unprovided(machine).length, id).toBeGreaterThan(0);
    expect(unprovided(transmissionMachine)).toEqual([
      "action refuseRequests", "action startServing", "action stopReading", "actor awaitQuiet", "actor awaitReplies",
    ]);
  });

  it("the stubs of the phases a connection invokes are the connection machine's too", () => {
    const left = unprovided(connectionMachine);
    for (const x of ["actor preconnect", "actor closeExport", "actor flushSocket", "action destroySocket", "action logEnd"]) expect(left).toContain(x);
    expect(left).toContain("actor handshake: action sendGreeting");
    expect(left).toContain("actor handshake: actor readClientFlags");
    expect(left).toContain("actor options: actor readOption");
    expect(left).toContain("actor options: action replyInfo");
    expect(left).toContain("actor transmission: action startServing");
    expect(left).toContain("actor transmission: actor awaitReplies");
  });

  it("a phase left a stub makes the connection machine refuse to run", () => {
    const provided = (transmission: AnyStateMachine) =>
      connectionMachine.provide({
        actors: {
          preconnect: fromPromise(async () => {}), closeExport: fromPromise(async () => {}), flushSocket: fromPromise(async () => {}),
          handshake: handshakeFor(wire, {}), options: optionsFor(wire, io), transmission,
        } as never,
        actions: { destroySocket: () => {}, logEnd: () => {} },
      });
    expect(() => assertProvided(provided(transmissionMachine))).toThrow(
      "machine connection: not provided: actor transmission: action refuseRequests, actor transmission: action startServing",
    );
    const tx = transmissionMachine.provide({
      actions: { startServing: () => {}, refuseRequests: () => {}, stopReading: () => {} },
      actors: { awaitReplies: fromPromise(async () => {}), awaitQuiet: fromPromise(async () => {}) },
    });
    expect(unprovided(provided(tx))).toEqual([]);
  });

  it("the negotiation runners provide every effect of the handshake and options machines", () => {
    expect(unprovided(handshakeFor(wire, {}))).toEqual([]);
    expect(unprovided(optionsFor(wire, io))).toEqual([]);
    expect(unprovided(optionsFor(wire, io, { records: [...builtinOptions, withActor] }))).toEqual([]);
  });

  it("an option record whose effects are not all provided makes the options runner throw", () => {
    expect(() => optionsFor(wire, io, { records: [...builtinOptions, noReply] })).toThrow("machine options: not provided: action replyTest");
    expect(() => optionsFor(wire, io, { records: [...builtinOptions, noActor] })).toThrow("machine options: not provided: actor testWork");
  });

  it("...and the server refuses to start with it (not at the first client)", async () => {
    await expect(startInProcess({ optionRecords: [...builtinOptions, noReply] })).rejects.toThrow("not provided: action replyTest");
    await expect(startInProcess({ optionRecords: [...builtinOptions, noActor] })).rejects.toThrow("not provided: actor testWork");
  });
});

describe("a real server and client: every machine actor runs with every effect provided", () => {
  let t: InProcess;
  const logics = new Map<string, AnyStateMachine>();
  /** Every machine logic each id ran with (one per server, not one per connection). */
  const seen = new Map<string, Set<AnyStateMachine>>();
  beforeAll(async () => {
    t = await startInProcess({
      optionRecords: [...builtinOptions, withActor],
      inspect: (ev: InspectionEvent) => {
        if (ev.type !== "@xstate.actor") return;
        const logic = (ev.actorRef as AnyActorRef).logic as AnyStateMachine;
        if (!logic || !("root" in logic)) return;
        logics.set(logic.id, logic);
        if (!seen.has(logic.id)) seen.set(logic.id, new Set());
        seen.get(logic.id)!.add(logic);
      },
    });
  });
  afterAll(async () => t?.stop());

  it("server, connection, handshake, options and transmission", async () => {
    const c = await NbdClient.open({ path: t.sock });
    await c.pwrite(Buffer.alloc(512, 3), 0);
    expect(await c.pread(512, 0)).toEqual(Buffer.alloc(512, 3));
    await c.disconnect();
    expect(await t.idle()).toBe(true);
    expect([...logics.keys()].sort()).toEqual(expect.arrayContaining(["connection", "handshake", "options", "server", "transmission"]));
    for (const [id, logic] of logics) expect(unprovided(logic), id).toEqual([]);
    expect(t.ctl.log.filter((m) => /not provided|TypeError/.test(m))).toEqual([]);
  });

  it("connections negotiating at once share the machines provided once, and each effect acts on its own connection", async () => {
    const clients = await Promise.all([1, 2, 3, 4].map(() => NbdClient.open({ path: t.sock })));
    await Promise.all(clients.map((c, i) => c.pwrite(Buffer.alloc(4096, i + 10), i * 4096)));
    const back = await Promise.all(clients.map((c, i) => c.pread(4096, i * 4096)));
    back.forEach((b, i) => expect(b).toEqual(Buffer.alloc(4096, i + 10)));
    await Promise.all(clients.map((c) => c.disconnect()));
    expect(await t.idle()).toBe(true);
    for (const id of ["connection", "handshake", "options", "transmission"]) expect(seen.get(id)?.size, id).toBe(1);
  });
});
