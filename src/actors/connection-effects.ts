// The connection machine with every effect provided, once per server:
// building a provided machine walks its state tree (3-4 ms per connection
// on a 2-core machine), so the effects are not closures over one
// connection; each finds its connection's own (ConnectionEffects, which
// the connection actor in connection.ts makes) through the actor system
// its actor and every machine it invokes share.

import { fromPromise } from "xstate";
import { assertProvided, type SystemScopes } from "../machines/effects.js";
import { connectionMachine } from "../machines/connection.js";
import { transmissionMachine } from "../machines/transmission.js";
import type { ConnectionSettings } from "./connection-settings.js";
import { handshakeLogic, optionsLogic, type Negotiation } from "./negotiation.js";

/** What one connection's effects do (connection.ts makes one per connection). */
export interface ConnectionEffects {
  negotiation: Negotiation;
  preconnect(): Promise<void>;
  closeExport(finalize: boolean): Promise<void>;
  flushSocket(): Promise<void>;
  destroySocket(): void;
  logEnd(): void;
  startServing(): void;
  refuseRequests(): void;
  stopReading(): void;
  awaitReplies(): Promise<void>;
  awaitQuiet(): Promise<void>;
}

/** The connection machine with every effect provided, once per server (an option record nobody provides fails here, at start). */
export function providedConnectionMachine(settings: ConnectionSettings, scopes: SystemScopes<ConnectionEffects>): typeof connectionMachine {
  const of = scopes.of;
  return assertProvided(
    connectionMachine.provide({
      actors: {
        // preconnect runs before the greeting: a refusal closes the socket unseen.
        preconnect: fromPromise(({ system }) => of({ system }).preconnect()),
        handshake: handshakeLogic({ timeoutMs: settings.handshakeTimeoutMs, maskHandshake: settings.maskHandshake }, (a) => of(a).negotiation.wire),
        options: optionsLogic({ timeoutMs: settings.optionTimeoutMs, records: settings.optionRecords }, (a) => of(a).negotiation),
        transmission: transmissionMachine.provide({
          actions: {
            startServing: ({ system }) => of({ system }).startServing(),
            refuseRequests: ({ system }) => of({ system }).refuseRequests(),
            stopReading: ({ system }) => of({ system }).stopReading(),
          },
          actors: {
            awaitReplies: fromPromise(({ system }) => of({ system }).awaitReplies()),
            awaitQuiet: fromPromise(({ system }) => of({ system }).awaitQuiet()),
          },
          delays: { SHUTDOWN_GRACE: settings.shutdownGraceMs ?? 5_000 },
        }),
        closeExport: fromPromise<void, { finalize: boolean }>(({ input, system }) => of({ system }).closeExport(input.finalize)),
        flushSocket: fromPromise(({ system }) => of({ system }).flushSocket()),
      },
      actions: {
        destroySocket: ({ system }) => of({ system }).destroySocket(),
        logEnd: ({ system }) => of({ system }).logEnd(),
      },
    }),
  );
}
