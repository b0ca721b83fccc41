// Model-based protocol test of option haggling: every shortest path of the
// options machine (nodes keyed by state, context and incoming event, so
// every transition is the last step of some path) is replayed as REAL
// option frames over a unix socket to an in-process server, and every reply
// is checked against the actions xstate's transition() predicts for that
// step.
//
// The machine is built from a record list, builtinOptions plus an option
// record defined here (TEST_OPT_ECHO: its own decoder, examples, guard,
// state, invoked effect and reply), and the server serves that same list:
// adding a record is enough for the walk to reach it.
//
// The walk's events, per state: in AWAIT_OPTION, readOption's outcome for
// every example payload of every record (the real decoding of it), an
// unknown option, one over the size limit, a frame with a bad magic, the
// client going away (ClientGone) and the OPTION_TIMEOUT delay (the client
// staying silent longer than the server's option timeout, short here); in
// the states that wait for an effect, the outcome the real in-process
// server produces: the export "missing" fails to open, the listing fails
// (plainly, or refused by policy: EPERM) while the test says so, TLS
// always fails (this server has no credentials), meta contexts are listed,
// the test option's effect fails on the word "fail".
//
// Paths run concurrently; the ones whose listings fail run in batches of
// their own (the plugin's failure switch is global), those mixing outcomes
// one at a time.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fromPromise, transition, type AnyMachineSnapshot, type EventObject } from "xstate";
import { getShortestPaths } from "@xstate/graph";
import { errorMessage } from "../../src/backend/errors.js";
import { NbdError } from "../../src/backend/types.js";
import { declaredAction, declaredActor } from "../../src/machines/effects.js";
import type { TlsMode } from "../../src/machines/options.js";
import { assembleOptionsMachine, builtinOptions, optionEvent } from "../../src/options/index.js";
import { listHierOption } from "../../src/options/list-hier.js";
import { hierLevel } from "../../src/protocol/hier.js";
import { decodeServerDirReply, NBD_DIR_FLAG_EXPORT } from "../../src/protocol/wire-options.js";
import { ClientGone, cur, err } from "../../src/options/assemble.js";
import type { CurrentOption, OptionRecord, OptionsContext } from "../../src/options/record.js";
import * as C from "../../src/protocol/constants.js";
import { WireError } from "../../src/protocol/wire-base.js";
import { decodeInfoReply, decodeMetaContextReply, decodeServerReply, encodeOption } from "../../src/protocol/wire.js";
import { handshake, RawConn, readOptionReply, type OptionReply } from "../helpers/raw.js";
import { waitFor } from "../helpers/server.js";
import { BLOCK_SIZE, DESCRIPTION, DIRTY_BITMAP, SIZE, startInProcess, type InProcess } from "./inproc.js";
import { allTransitions } from "./paths.js";
import { transmissionWorks } from "./wire-steps.js";

const MAX_OPTIONS = 2;
/** The server's option timeout here: a silent client is let go after it. */
const OPTION_TIMEOUT_MS = 700;
const CONCURRENCY = 32;

// ------------------------------------------------------- the test's option

/** An option number nobody else uses, and a reply type of its own. */
const NBD_OPT_TEST_ECHO = 0x7e57_0001;
const NBD_REP_TEST_ECHO = 0x7e57;
const ECHO_FAILS_ON = "fail";
const reversed = (w: string) => [...w].reverse().join("");

/**
 * TEST_OPT_ECHO WORD: the server answers NBD_REP_TEST_ECHO with the word
 * reversed, then NBD_REP_ACK; an empty word is NBD_REP_ERR_INVALID (its own
 * guard); a payload over 8 bytes is malformed (the common rule); the reply
 * comes from an invoked effect, which fails (NBD_REP_ERR_PLATFORM) on "fail".
 */
const echoOption: OptionRecord = {
  option: NBD_OPT_TEST_ECHO,
  event: "TEST_OPT_ECHO",
  decode: (payload) => (payload.length > 8 ? { name: "", malformed: "the test word is over 8 bytes" } : { name: payload.toString("latin1") }),
  examples: [Buffer.from("hello"), Buffer.from(ECHO_FAILS_ON), Buffer.alloc(0), Buffer.from("too long a word")],
  transitions: [
    { guard: "echoWordMissing", actions: err("NBD_REP_ERR_INVALID", "TEST_OPT_ECHO needs a word") },
    { target: "TEST_ECHO" },
  ],
  states: {
    TEST_ECHO: {
      invoke: {
        id: "echo",
        src: "echo",
        input: ({ context }: { context: OptionsContext }) => ({ word: context.current?.name ?? "" }),
        onDone: { target: "AWAIT_OPTION", actions: "replyEcho" },
        onError: {
          target: "AWAIT_OPTION",
          actions: {
            type: "replyError",
            params: ({ event }: { event: { error?: unknown } }) => ({ error: "NBD_REP_ERR_PLATFORM", message: errorMessage(event.error) }),
          },
        },
      },
    },
  },
  guards: { echoWordMissing: ({ event }: { event: unknown }) => cur(event)?.length === 0 },
  actions: { replyEcho: declaredAction("replyEcho") },
  actors: { echo: declaredActor<{ word: string }, string>("echo") },
  effects: (ioOf) => ({
    actors: {
      echo: fromPromise<string, { word: string }>(async ({ input, system }) => {
        const io = ioOf({ system });
        // An effect may reach the stack: the default export's name is asked, as a record would.
        await io.backend.defaultExport({ readonly: io.readonly, tls: false });
        if (input.word === ECHO_FAILS_ON) throw new Error("the test effect failed on purpose");
        return reversed(input.word);
      }),
    },
    actions: {
      replyEcho: ({ context, event, system }: { context: OptionsContext; event: { output: string }; system: object }) => {
        const io = ioOf({ system });
        io.reply(context.current!.option, NBD_REP_TEST_ECHO, Buffer.from(event.output, "latin1"));
        io.reply(context.current!.option, C.NBD_REP_ACK);
      },
    },
  }),
};

// The experimental NBD_OPT_LIST_HIER record (off by default in the server) is walked with the others.
const records: readonly OptionRecord[] = [...builtinOptions, listHierOption, echoOption];
const machine = assembleOptionsMachine(records);

// -------------------------------------------------------------- the model

type Snap = AnyMachineSnapshot & { context: OptionsContext };
type Ev = EventObject & { output?: unknown; error?: unknown; frame?: number };
type Act = { type: string; params?: Record<string, unknown> };

/** The bytes a client sends for an event, by index (events carry the index: they are serialized). */
const FRAMES: Buffer[] = [];
const sending = (ev: Ev, bytes: Buffer): Ev => (FRAMES.push(bytes), { ...ev, frame: FRAMES.length - 1 });
const done = (id: string, output?: unknown): Ev => ({ type: `xstate.done.actor.${id}`, output });
const fail = (id: string, error: unknown): Ev => ({ type: `xstate.error.actor.${id}`, error });

const TIMEOUT = "xstate.after.OPTION_TIMEOUT.options.AWAIT_OPTION";
const UNSUPPORTED = C.NBD_OPT_PEEK_EXPORT;
const TOO_LONG = C.MAX_OPTION_LENGTH + 1;
const AWAIT_EVENTS: Ev[] = [
  ...records.flatMap((r) => (r.examples ?? []).map((p) => sending(done("readOption", optionEvent(records, r.option, p)), encodeOption(r.option, p)))),
  sending(done("readOption", optionEvent(records, UNSUPPORTED, Buffer.alloc(0))), encodeOption(UNSUPPORTED)),
  sending(done("readOption", { type: "OPTION_TOO_LARGE", current: { option: C.NBD_OPT_LIST, length: TOO_LONG } }), encodeOption(C.NBD_OPT_LIST, Buffer.alloc(TOO_LONG, 0x55))),
  sending(fail("readOption", new WireError("bad option magic")), Buffer.alloc(16, 0x42)),
  fail("readOption", new ClientGone()),
  { type: TIMEOUT },
];

const LISTING = [{ name: "", description: DESCRIPTION }];
const LIST_FAILED = new Error("listing failed on purpose");
const LIST_REFUSED = new NbdError(C.NBD_EPERM, "listing is not allowed here");
const AVAILABLE = [C.BASE_ALLOCATION, DIRTY_BITMAP];
/** The default export: its canonical name is "" (the memory plugin's). */
const infoOf = (asked: string) => ({ name: asked, size: SIZE, flags: C.NBD_FLAG_HAS_FLAGS, description: DESCRIPTION, blockSize: BLOCK_SIZE, canWrite: true, canFua: true });

/** What the model may do next in a state: only what the real server can produce. */
function events(s: Snap): Ev[] {
  const c = s.context.current;
  switch (s.value) {
    case "AWAIT_OPTION":
      return AWAIT_EVENTS;
    case "LIST_EXPORTS":
      return [done("listExports", LISTING), fail("listExports", LIST_FAILED), fail("listExports", LIST_REFUSED)];
    case "LIST_HIER":
      return [done("listHier", LISTING), fail("listHier", LIST_FAILED), fail("listHier", LIST_REFUSED)];
    case "META_CONTEXTS":
      return [done("metaContexts", AVAILABLE)];
    case "STARTTLS":
      return [fail("upgradeTls", new Error("TLS is not configured"))];
    case "OPEN_EXPORT_INFO":
    case "OPEN_EXPORT_GO":
    case "EXPORT_NAME":
      if (c?.name === "missing") return [fail("openExport", new Error("no such export"))];
      return [done("openExport", { info: infoOf(c?.name ?? ""), opened: s.value === "OPEN_EXPORT_INFO" ? null : { context: "of the model" }, asked: c?.name ?? "" })];
    case "TEST_ECHO":
      return c?.name === ECHO_FAILS_ON ? [fail("echo", new Error("the test effect failed on purpose"))] : [done("echo", reversed(c?.name ?? ""))];
    default:
      return [];
  }
}

const json = (x: unknown) => JSON.stringify(x, (_k, v) => (v instanceof Error ? `${v.name}: ${v.message}` : typeof v === "bigint" ? String(v) : v));

interface Step {
  state: Snap;
  event: Ev;
}
interface ModelPath {
  description: string;
  steps: Step[];
}

const memo = new Map<TlsMode, ModelPath[]>();
function modelPaths(tls: TlsMode): ModelPath[] {
  if (!memo.has(tls)) memo.set(tls, computePaths(tls));
  return memo.get(tls)!;
}

function computePaths(tls: TlsMode): ModelPath[] {
  const found = getShortestPaths(machine, {
    events: events as never,
    input: { maxOptions: MAX_OPTIONS, tls },
    serializeState: (s: Snap, e?: Ev) => json([s.value, s.context, e ?? null]),
  } as never) as unknown as { steps: Step[] }[];
  return found.map((p) => ({
    steps: p.steps,
    description: p.steps.slice(1).map((s) => (s.event.type === "xstate.done.actor.readOption" ? (s.event.output as { type: string }).type : s.event.type.replace(/^xstate\.(done|error)\.actor\./, "$1:"))).join(" → ") || "(start)",
  }));
}

/** Events that answer a listing of the stack (NBD_OPT_LIST's and NBD_OPT_LIST_HIER's). */
const isListing = (e: Ev) => e.type.endsWith(".actor.listExports") || e.type.endsWith(".actor.listHier");

/** The listing outcomes a path asks of the plugin, in order. */
function listings(p: ModelPath): ("ok" | "fail" | "policy")[] {
  return p.steps
    .filter((s) => isListing(s.event))
    .map((s) => (s.event.type.startsWith("xstate.done") ? "ok" : s.event.error === LIST_REFUSED ? "policy" : "fail"));
}

// ------------------------------------------------------- the wire, per step

/** The spec's matching of meta context queries: exact names; a namespace "ns:" lists all of it (LIST only); no query lists all and selects none. */
function specMatch(queries: readonly string[], list: boolean): string[] {
  if (queries.length === 0) return list ? AVAILABLE : [];
  return AVAILABLE.filter((n) => queries.some((q) => q === n || (list && q.endsWith(":") && n.startsWith(q))));
}

/** The frames expected for one named action: checks for each, in order. */
type Expect = { type: number; check?: (r: OptionReply) => void };

function expectedFrames(a: Act, ev: Ev, before: Snap, after: Snap): Expect[] | "export-name" {
  const c = before.context;
  const current = (after.context.current ?? c.current) as CurrentOption;
  const ack: Expect = { type: C.NBD_REP_ACK, check: (r) => expect(r.data.length, "ACK carries no data").toBe(0) };
  switch (a.type) {
    case "replyAck":
      return [ack];
    case "replyError":
      return [{ type: C[a.params!.error as "NBD_REP_ERR_UNSUP"], check: (r) => expect(r.data.toString("utf8").length, "error replies carry a message").toBeGreaterThan(0) }];
    case "replyMalformed":
      return [{ type: C.NBD_REP_ERR_INVALID, check: (r) => expect(r.data.toString("utf8")).toBe(current.malformed) }];
    case "replyExportList":
      return [...(ev.output as typeof LISTING).map((e) => ({ type: C.NBD_REP_SERVER, check: (r: OptionReply) => expect(decodeServerReply(r.data)).toEqual(e) })), ack];
    case "replyMetaContexts": {
      const list = current.option === C.NBD_OPT_LIST_META_CONTEXT;
      const names = specMatch(current.queries ?? [], list);
      // SET: the ids the client will use in transmission are those the model selected.
      const ids = list ? null : after.context.meta!.contexts;
      if (ids) expect(ids.map((x) => x.name)).toEqual(names);
      return [
        ...names.map((name, i) => ({
          type: C.NBD_REP_META_CONTEXT,
          check: (r: OptionReply) => {
            const m = decodeMetaContextReply(r.data);
            expect(m.name).toBe(name);
            if (ids) expect(m.id).toBe(ids[i]!.id);
          },
        })),
        ack,
      ];
    }
    case "replyInfo": {
      const infos = current.infos ?? [];
      const want = [C.NBD_INFO_EXPORT, ...[C.NBD_INFO_NAME, C.NBD_INFO_DESCRIPTION, C.NBD_INFO_BLOCK_SIZE].filter((i) => infos.includes(i))];
      return [
        ...want.map((type) => ({
          type: C.NBD_REP_INFO,
          check: (r: OptionReply) => {
            const info = decodeInfoReply(r.data) as Record<string, number | string> & { type: number };
            expect(info.type).toBe(type);
            if (type === C.NBD_INFO_EXPORT) {
              expect(info.size).toBe(SIZE);
              const flags = info.transmissionFlags as number;
              expect(flags & C.NBD_FLAG_HAS_FLAGS).toBe(C.NBD_FLAG_HAS_FLAGS);
              // "NBD_FLAG_SEND_DF ... only if structured replies have been negotiated".
              expect(!!(flags & C.NBD_FLAG_SEND_DF), "SEND_DF").toBe(c.structuredReplies);
              // "MUST NOT advertise this bit unless ... extended headers ..., SHOULD NOT ... if ... no metacontexts".
              expect(!!(flags & C.NBD_FLAG_BLOCK_STATUS_PAYLOAD), "BLOCK_STATUS_PAYLOAD").toBe(c.extendedHeaders && c.meta !== null);
            }
            if (type === C.NBD_INFO_NAME) expect(info.name).toBe("");
            if (type === C.NBD_INFO_DESCRIPTION) expect(info.description).toBe(DESCRIPTION);
            if (type === C.NBD_INFO_BLOCK_SIZE) expect(info).toMatchObject(BLOCK_SIZE);
          },
        })),
        ack,
      ];
    }
    case "replyHierLevel": {
      // One reply per node of the level (the model's listing cut at the path), then ACK.
      const level = hierLevel(ev.output as typeof LISTING, current.path ?? "")!;
      return [
        ...level.map((n) =>
          n.isDir
            ? { type: C.NBD_REP_SERVER_DIR, check: (r: OptionReply) => expect(decodeServerDirReply(r.data)).toEqual({ name: n.name, flags: n.isExport ? NBD_DIR_FLAG_EXPORT : 0, description: n.description }) }
            : { type: C.NBD_REP_SERVER, check: (r: OptionReply) => expect(decodeServerReply(r.data)).toEqual({ name: n.name, description: n.description }) },
        ),
        ack,
      ];
    }
    case "replyEcho":
      return [{ type: NBD_REP_TEST_ECHO, check: (r) => expect(r.data.toString("latin1")).toBe(reversed(current.name ?? "")) }, ack];
    case "replyExportName":
      return "export-name";
    default:
      throw new Error(`the model does not know what ${a.type} sends`);
  }
}

interface Conn {
  conn: RawConn;
  id: string;
}

/** Connections are opened one at a time, so the one the server registered is this client's. */
let opening: Promise<unknown> = Promise.resolve();
async function connect(t: InProcess): Promise<Conn> {
  const turn = opening.then(async () => {
    const before = new Set(t.srv.connections().map((c) => c.id));
    const conn = await RawConn.connect(t.sock);
    await handshake(conn);
    const fresh = t.srv.connections().map((c) => c.id).filter((id) => !before.has(id));
    expect(fresh, "one new connection").toHaveLength(1);
    return { conn, id: fresh[0]! };
  });
  opening = turn.catch(() => {});
  return turn;
}

const phaseOf = (t: InProcess, id: string) => t.srv.connections().find((c) => c.id === id)?.phase;
async function gone(t: InProcess, c: Conn, what: string): Promise<void> {
  expect(await waitFor(() => phaseOf(t, c.id) === undefined, 3000, 2), `${what}: the server forgets the connection (${phaseOf(t, c.id)})`).toBe(true);
}

/** The events of one client step: the frame (or silence), then the server's follow-ups in the states it waits in. */
interface Group {
  event: Ev;
  before: Snap;
  /** Each event of the step with what the machine decided for it. */
  parts: { ev: Ev; before: Snap; after: Snap; acts: Act[] }[];
  after: Snap;
}

function groups(p: ModelPath): Group[] {
  const out: Group[] = [];
  const steps = p.steps;
  let i = 1;
  while (i < steps.length) {
    const before = steps[i - 1]!.state;
    const ev = steps[i++]!.event;
    expect(before.value, `${ev.type} is a client step`).toBe("AWAIT_OPTION");
    const g: Group = { event: ev, before, parts: [], after: before };
    let at = before;
    let next: Ev | undefined = ev;
    while (next) {
      const [after, acts] = transition(machine, at as never, next as never) as unknown as [Snap, Act[]];
      g.parts.push({ ev: next, before: at, after, acts: acts.filter((a) => !a.type.startsWith("xstate.")) });
      at = after;
      if (after.value === "AWAIT_OPTION" || after.status !== "active") break;
      // A state waiting for an effect: the server's outcome is the path's next step, or (a path that
      // ends mid-option) the one the server produces anyway.
      next = i < steps.length ? steps[i++]!.event : events(after)[0];
    }
    g.after = at;
    out.push(g);
  }
  return out;
}

/** What the walk did on the wire, for the record (and checks that it did). */
const seen = { replies: 0, transmission: 0, structured: 0, extended: 0, withContexts: 0, timeouts: 0, hangups: 0, closedByServer: 0 };

async function step(t: InProcess, c: Conn, g: Group, listing: (ev: Ev) => void): Promise<void> {
  const { conn } = c;
  const ev = g.event;
  if (ev.type === TIMEOUT) {
    expect(await conn.waitClosed(OPTION_TIMEOUT_MS * 6), "the server lets a silent client go").toBe(true);
    seen.timeouts++;
    return gone(t, c, "timeout");
  }
  if (ev.error instanceof ClientGone) {
    conn.destroy();
    seen.hangups++;
    return gone(t, c, "client gone");
  }
  for (const p of g.parts) if (isListing(p.ev)) listing(p.ev);
  conn.write(FRAMES[ev.frame!]!);
  const option = (g.parts.at(-1)!.after.context.current ?? g.before.context.current)?.option;
  for (const p of g.parts) {
    for (const a of p.acts) {
      const frames = expectedFrames(a, p.ev, p.before, p.after);
      if (frames === "export-name") {
        // NBD_OPT_EXPORT_NAME's reply: size and flags; no padding after NO_ZEROES (our handshake sets it).
        const b = await conn.read(10, 3000);
        expect(b.readBigUInt64BE(0)).toBe(BigInt(SIZE));
        const flags = b.readUInt16BE(8);
        expect(flags & C.NBD_FLAG_HAS_FLAGS).toBe(C.NBD_FLAG_HAS_FLAGS);
        expect(!!(flags & C.NBD_FLAG_SEND_DF)).toBe(p.before.context.structuredReplies);
        continue;
      }
      for (const f of frames) {
        const r = await readOptionReply(conn, 3000);
        expect(r.option, "the reply names the option it answers").toBe(option);
        expect(C.REPLY_NAMES[r.type] ?? r.type.toString(16), `a reply to ${a.type}`).toBe(C.REPLY_NAMES[f.type] ?? f.type.toString(16));
        f.check?.(r);
        seen.replies++;
      }
    }
  }
  const after = g.after;
  if (after.status === "done") {
    const out = after.output as { transmission: boolean; structuredReplies: boolean; extendedHeaders: boolean; metaContexts: { id: number; name: string }[] };
    if (out.transmission) {
      expect(await waitFor(() => phaseOf(t, c.id) === "TRANSMISSION/SERVING", 3000, 2), `phase ${phaseOf(t, c.id)}`).toBe(true);
      await transmissionWorks(conn, out);
      seen.transmission++;
      if (out.structuredReplies) seen.structured++;
      if (out.extendedHeaders) seen.extended++;
      if (out.metaContexts.length) seen.withContexts++;
    } else {
      expect(await conn.waitClosed(3000), "the server closes the connection").toBe(true);
      seen.closedByServer++;
    }
    return gone(t, c, String(after.context.reason ?? "transmission"));
  }
  expect(conn.closed, "the connection stays open").toBe(false);
  // The server's machine is where the model is.
  expect(await waitFor(() => phaseOf(t, c.id) === `OPTIONS/${String(after.value)}`, 3000, 2), `phase ${phaseOf(t, c.id)}, model ${String(after.value)}`).toBe(true);
}

async function run(t: InProcess, p: ModelPath, listing: (ev: Ev) => void): Promise<void> {
  const c = await connect(t);
  try {
    expect(await waitFor(() => phaseOf(t, c.id) === "OPTIONS/AWAIT_OPTION", 3000, 2)).toBe(true);
    for (const g of groups(p)) await step(t, c, g, listing);
    if (!c.conn.closed) {
      c.conn.destroy();
      await gone(t, c, "end of the path");
    }
  } catch (e) {
    (e as Error).message += `\npath: ${p.description}`;
    throw e;
  } finally {
    c.conn.destroy();
  }
}

/** Run paths `n` at a time; the first failure is thrown once the others have stopped. */
async function pool(paths: ModelPath[], n: number, f: (p: ModelPath) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: unknown = null;
  await Promise.all(
    Array.from({ length: Math.min(n, paths.length) }, async () => {
      while (next < paths.length && failure === null) {
        const p = paths[next++]!;
        await f(p).catch((e) => (failure ??= e));
      }
    }),
  );
  if (failure !== null) throw failure;
}

// ------------------------------------------------------------------ tests

/** Every (state, event) a path takes, an option counted as the event readOption raises for it. */
function takenBy(paths: ModelPath[]): Set<string> {
  const out = new Set<string>();
  for (const p of paths) {
    for (const g of groups(p)) {
      for (const part of g.parts) {
        const raised = part.ev.type === "xstate.done.actor.readOption" ? (part.ev.output as { type: string }).type : part.ev.type;
        out.add(`${String(part.before.value)} ${raised}`);
      }
    }
  }
  return out;
}

describe("the model of the options machine (builtinOptions + TEST_OPT_ECHO)", () => {
  const paths = modelPaths("off");

  it("takes every transition (with --tls=off and =require) but those this server cannot produce", () => {
    const cannot = [
      // Outside a client's reach: the server's SHUTDOWN, and the CLIENT_CLOSED the connection sends while an
      // effect runs (the table tests have them; transmission-model.test.ts has a shutdown during GO).
      / (SHUTDOWN|CLIENT_CLOSED)$/,
      // The stack lists this plugin's meta contexts without fail.
      /^META_CONTEXTS xstate\.error\.actor\.metaContexts$/,
      // No TLS credentials in process: test/interop/tls.test.ts has real TLS.
      /^STARTTLS xstate\.done\.actor\.upgradeTls$/,
    ];
    const want = allTransitions(machine).filter((x) => x !== "AWAIT_OPTION xstate.done.actor.readOption" && !cannot.some((re) => re.test(x)));
    // An option counts as the event readOption raises for it.
    expect([...takenBy([...paths, ...modelPaths("require")])].sort()).toEqual(want);
  });

  it("walks the test record: every example, its own guard, the common rules, its state's effect both ways", () => {
    const ends = paths.map((p) => ({ ev: p.steps.at(-1)!.event, s: p.steps.at(-1)!.state }));
    const echo = ends.filter((e) => (e.ev.output as { type?: string } | undefined)?.type === "TEST_OPT_ECHO");
    const by = (pred: (e: (typeof echo)[number]) => boolean) => echo.filter(pred).length;
    expect(by((e) => e.s.value === "TEST_ECHO" && e.s.context.current?.name === "hello"), "hello: into TEST_ECHO").toBeGreaterThan(0);
    expect(by((e) => e.s.value === "TEST_ECHO" && e.s.context.current?.name === ECHO_FAILS_ON), "fail: into TEST_ECHO").toBeGreaterThan(0);
    expect(by((e) => e.s.value === "AWAIT_OPTION" && e.s.context.current?.length === 0), "the empty word: answered in place").toBeGreaterThan(0);
    expect(by((e) => e.s.value === "AWAIT_OPTION" && e.s.context.current?.malformed === "the test word is over 8 bytes"), "malformed").toBeGreaterThan(0);
    expect(by((e) => e.s.value === "CLOSED" && e.s.context.reason === "too many options"), "over the budget").toBeGreaterThan(0);
    expect(ends.some((e) => e.ev.type === "xstate.done.actor.echo")).toBe(true);
    expect(ends.some((e) => e.ev.type === "xstate.error.actor.echo")).toBe(true);
    // Under --tls=require it is refused before TLS like any option that is not STARTTLS or ABORT.
    const req = modelPaths("require").map((p) => p.steps.at(-1)!);
    expect(req.some((x) => (x.event.output as { type?: string } | undefined)?.type === "TEST_OPT_ECHO" && x.state.value === "AWAIT_OPTION")).toBe(true);
    expect(req.some((x) => String(x.state.value) === "TEST_ECHO")).toBe(false);
  });

  it("walks NBD_OPT_LIST_HIER: the top, a path that names nothing (UNKNOWN), a bad path (INVALID), the listing failing and refused", () => {
    const ends = paths.map((p) => ({ ev: p.steps.at(-1)!.event, s: p.steps.at(-1)!.state, prev: p.steps.at(-2)?.state }));
    const after = (type: string) => ends.filter((e) => e.ev.type === type && e.prev?.value === "LIST_HIER");
    expect([...new Set(after("xstate.done.actor.listHier").map((e) => e.prev!.context.current?.path))].sort()).toEqual(["", "a.img:"]);
    expect(after("xstate.error.actor.listHier").length).toBeGreaterThanOrEqual(1);
    const hier = ends.filter((e) => (e.ev.output as { type?: string } | undefined)?.type === "NBD_OPT_LIST_HIER");
    expect(hier.some((e) => e.s.value === "AWAIT_OPTION" && e.s.context.current?.malformed === "NBD_OPT_LIST_HIER: a path is empty or ends with ':'")).toBe(true);
    expect(hier.some((e) => e.s.value === "AWAIT_OPTION" && /bytes/.test(String(e.s.context.current?.malformed)))).toBe(true);
  });
});

for (const tls of ["off", "require"] as const) {
  describe(`options machine model over a real socket (tls ${tls}, maxOptions ${MAX_OPTIONS})`, () => {
    let t: InProcess;
    beforeAll(async () => {
      t = await startInProcess({ maxOptions: MAX_OPTIONS, tls, optionTimeoutMs: OPTION_TIMEOUT_MS, optionRecords: records });
    });
    afterAll(async () => t?.stop());

    it("walks every shortest path", async () => {
      const paths = modelPaths(tls);
      const kinds = (p: ModelPath) => [...new Set(listings(p))];
      const batches: [string, ModelPath[], boolean | "policy"][] = [
        ["listing works", paths.filter((p) => kinds(p).every((k) => k === "ok")), false],
        ["listing fails", paths.filter((p) => kinds(p).length === 1 && kinds(p)[0] === "fail"), true],
        ["listing refused", paths.filter((p) => kinds(p).length === 1 && kinds(p)[0] === "policy"), "policy"],
      ];
      const mixed = paths.filter((p) => kinds(p).length > 1);
      expect(batches.reduce((a, [, ps]) => a + ps.length, 0) + mixed.length).toBe(paths.length);
      for (const [, ps, failList] of batches) {
        t.ctl.failList = failList;
        await pool(ps, CONCURRENCY, (p) => run(t, p, () => {}));
      }
      // One at a time: each listing is set up as the path says, just before it.
      await pool(mixed, 1, (p) =>
        run(t, p, (ev) => {
          t.ctl.failList = ev.type.startsWith("xstate.done") ? false : ev.error === LIST_REFUSED ? "policy" : true;
        }),
      );
      t.ctl.failList = false;
      expect(paths.length).toBeGreaterThan(tls === "off" ? 1000 : 50);
      if (tls === "off") {
        expect(mixed.length).toBeGreaterThan(0);
        // Into transmission in every reply format, with meta contexts selected too.
        for (const k of ["transmission", "structured", "extended", "withContexts", "timeouts", "hangups", "closedByServer"] as const) expect(seen[k], k).toBeGreaterThan(0);
      }
      expect(await t.idle(), "every connection is gone").toBe(true);
      expect(t.ctl.closes, "every context opened was closed").toBe(t.ctl.opens);
      expect(t.ctl.log.filter((m) => /TypeError|ReferenceError|uncaught|not provided/i.test(m))).toEqual([]);
    }, 120_000);
  });
}
