// The effects of the handshake and options machines for one connection:
// the greeting, reading the client flags and each option frame, the
// option replies, and the options' own effects over the connection's IO.
// The machines decide; these only do what they name.

import { fromPromise, type AnyStateMachine } from "xstate";
import type { Duplex } from "node:stream";
import { handshakeMachine } from "../machines/handshake.js";
import { optionsMachine } from "../machines/options.js";
import { assertProvided, type Of } from "../machines/effects.js";
import { builtinOptions, optionEffects, optionEvent, type OptionRecord, type OptionsIO } from "../options/index.js";
import { assembleOptionsMachine, ClientGone } from "../options/assemble.js";
import * as C from "../protocol/constants.js";
import { WireError } from "../protocol/wire-base.js";
import { encodeGreeting, encodeOptionReply } from "../protocol/wire-options.js";
import { EofError, type ByteQueue } from "./byte-queue.js";

/** The largest delay setTimeout takes: "no limit". */
const NEVER = 2 ** 31 - 1;

/** The connection as negotiation sees it. */
export interface Wire {
  queue: ByteQueue;
  /** Where replies go (the TLS socket after STARTTLS). */
  stream(): Duplex;
  write(b: Buffer): void;
}

export interface HandshakeSettings {
  /** From the greeting until the client's flags arrive (0: no limit). */
  timeoutMs?: number;
  /** --mask-handshake=MASK: the handshake flags sent are the default ones & MASK. */
  maskHandshake?: number;
}

/**
 * The handshake machine with its effects, provided once per server: each
 * effect finds its connection's wire with `wireOf`.
 */
export function handshakeLogic(s: HandshakeSettings, wireOf: Of<Wire>): AnyStateMachine {
  const flags = (C.NBD_FLAG_FIXED_NEWSTYLE | C.NBD_FLAG_NO_ZEROES) & (s.maskHandshake ?? 0xffff);
  return assertProvided(
    handshakeMachine.provide({
      actions: { sendGreeting: ({ system }) => wireOf({ system }).write(encodeGreeting(flags)) },
      actors: {
        readClientFlags: fromPromise(async ({ system }) => (await wireOf({ system }).queue.read(4)).readUInt32BE(0)),
      },
      delays: { HANDSHAKE_TIMEOUT: s.timeoutMs || NEVER },
    }),
  );
}

/** The handshake machine for one wire (tests and tools; a server provides it once, handshakeLogic). */
export function handshakeFor(w: Wire, s: HandshakeSettings): AnyStateMachine {
  return handshakeLogic(s, () => w);
}

/** Resolves once the socket's write buffer is below its high-water mark (or it is gone). */
function drained(socket: Duplex): Promise<void> {
  if (!socket.writableNeedDrain || socket.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      socket.off("drain", done);
      socket.off("close", done);
      resolve();
    };
    socket.on("drain", done);
    socket.on("close", done);
  });
}

/** Read one option frame and decode it with the records. */
async function readOption(w: Wire, records: readonly OptionRecord[]): Promise<{ type: string; current: unknown }> {
  // Back-pressure: a client that sends options without reading the replies
  // (a listing can be megabytes) must not make the server buffer them all:
  // the next option is read only once they are out.
  await drained(w.stream());
  try {
    const head = await w.queue.read(16);
    if (head.readBigUInt64BE(0) !== C.IHAVEOPT) throw new WireError("bad option magic");
    const option = head.readUInt32BE(8);
    const length = head.readUInt32BE(12);
    // Far too long to be honest: hang up rather than read it (a server MAY
    // hard-disconnect a client it deems a denial of service).
    if (length > C.MAX_SKIPPED_OPTION_LENGTH) throw new WireError(`option length ${length} is too large`);
    if (length > C.MAX_OPTION_LENGTH) {
      await w.queue.skip(length);
      return { type: "OPTION_TOO_LARGE", current: { option, length } };
    }
    return optionEvent(records, option, await w.queue.read(length));
  } catch (e) {
    if (e instanceof EofError) throw new ClientGone();
    throw e;
  }
}

const assembled = new WeakMap<readonly OptionRecord[], AnyStateMachine>();
function assembledFor(records: readonly OptionRecord[]): AnyStateMachine {
  let m = assembled.get(records);
  if (!m) assembled.set(records, (m = assembleOptionsMachine(records)));
  return m;
}

export interface OptionsSettings {
  /** Idle time allowed per option, the frame included (0: no limit). */
  timeoutMs?: number;
  records?: readonly OptionRecord[];
}

/** A connection's negotiation: its wire and what its option effects do on it. */
export interface Negotiation {
  wire: Wire;
  io: OptionsIO;
}

/** The options IO over a wire: replies and raw bytes go to it (io's getters, noZeroes, stay live). */
export function negotiationOf(w: Wire, io: Omit<OptionsIO, "reply" | "write">): Negotiation {
  // io is the prototype, not copied: its getters keep reading the connection.
  const full = Object.assign(Object.create(io) as OptionsIO, {
    reply: (option: number, type: number, data?: Buffer) => w.write(encodeOptionReply(option, type, data)),
    write: (b: Buffer) => w.write(b),
  });
  return { wire: w, io: full };
}

/**
 * The options machine with the records' effects and reading, provided once
 * per server: each effect finds its connection with `of`. Building a
 * provided machine walks its whole state tree; per connection that was
 * most of the accept-to-greeting time (3-4 ms of a 2-core machine).
 */
export function optionsLogic(s: OptionsSettings, of: Of<Negotiation>): AnyStateMachine {
  const records = s.records ?? builtinOptions;
  const effects = optionEffects(records, (scope) => of(scope).io, C as unknown as Record<string, number>);
  // Other records (tests add their own, --experimental-list-hier one more) make their own machine, once.
  const machine = s.records ? assembledFor(s.records) : optionsMachine;
  return assertProvided(
    machine.provide({
      actions: effects.actions as never,
      actors: { ...(effects.actors as object), readOption: fromPromise(({ system }) => readOption(of({ system }).wire, records)) } as never,
      delays: { OPTION_TIMEOUT: s.timeoutMs || NEVER },
    }),
  );
}

/** The options machine for one connection's wire and IO (tests and tools; a server provides it once, optionsLogic). */
export function optionsFor(w: Wire, io: Omit<OptionsIO, "reply" | "write">, s: OptionsSettings = {}): AnyStateMachine {
  const n = negotiationOf(w, io);
  return optionsLogic(s, () => n);
}
