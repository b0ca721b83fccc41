// What the sh and eval plugins share: the $tmpdir directory, the
// environment, the thread model, and calling one method of the script.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir as osTmpdir } from "node:os";
import { join } from "node:path";
import { NbdError } from "../../backend/types.js";
import type { ConnectionInfo, ServerServices } from "../../backend/types.js";
import { NBD_EIO, NBD_ESHUTDOWN } from "../../protocol/constants.js";
import { runScript, runScriptSync, MAX_STDOUT } from "./run.js";
import { Serial } from "./serial.js";
import type { ThreadModel } from "./parse.js";
import * as S from "./status.js";

/** The plugin's handle: the string the script's open printed, and per-connection state. */
export interface ShHandle {
  /** Passed to the script as $2 of every connected method. */
  readonly id: string;
  readonly conn: ConnectionInfo | undefined;
  /** serialize_requests: one script run at a time for this connection. */
  readonly serial: Serial | null;
  /** serialize_connections: releases the connection lock at close. */
  release: (() => void) | null;
  /** Asked once per connection (can_fua and can_fast_zero depend on them). */
  canFlush?: boolean;
  /** The script's can_zero: whether its zero method may be called. */
  canZero?: boolean;
}

/** How a method ended, once errors have been thrown: 0 (ok), 2 (missing) or 3 (false). */
export interface Outcome {
  status: typeof S.OK | typeof S.MISSING | typeof S.FALSE;
  stdout: Buffer;
  /** Bytes printed on stdout (with `into`, stdout stays empty and this counts them). */
  length: number;
}

export interface CallOptions {
  handle?: ShHandle;
  /** For open, before the handle exists. */
  conn?: ConnectionInfo;
  input?: Buffer;
  into?: Buffer;
}

export class ScriptHost {
  tmpdir = "";
  env: NodeJS.ProcessEnv = {};
  threadModel: ThreadModel = "serialize_all_requests";
  /** Holds every script run under serialize_all_requests and serialize_connections. */
  private readonly all = new Serial();
  /** serialize_connections: one connection at a time, from open to close. */
  readonly connections = new Serial();
  private services: ServerServices | null = null;
  private shutdownWanted = false;
  private readonly onExit = () => this.removeTmpdir();

  /** @param scriptFor the executable to run for a method (undefined: no script yet) */
  constructor(private readonly scriptFor: (method: string) => string | undefined) {}

  /** Create $tmpdir (removed at unload, or at exit if unload never comes). */
  createTmpdir(): void {
    if (this.tmpdir) return;
    this.tmpdir = mkdtempSync(join(osTmpdir(), "nbdstate-sh-"));
    this.env = { ...process.env, tmpdir: this.tmpdir };
    process.once("exit", this.onExit);
  }

  removeTmpdir(): void {
    if (!this.tmpdir) return;
    rmSync(this.tmpdir, { recursive: true, force: true });
    process.removeListener("exit", this.onExit);
    this.tmpdir = "";
  }

  afterFork(services: ServerServices): void {
    this.services = services;
    if (this.shutdownWanted) services.shutdown("the script asked the server to shut down");
  }

  /** One handle's lock under serialize_requests. */
  handleSerial(): Serial | null {
    return this.threadModel === "serialize_requests" ? new Serial() : null;
  }

  /** Run `script method args...` under the thread model's lock; throws the script's error. */
  call(method: string, args: readonly string[], o: CallOptions = {}): Promise<Outcome> {
    switch (this.threadModel) {
      case "parallel":
        return this.exec(method, args, o);
      case "serialize_requests":
        return o.handle?.serial ? o.handle.serial.run(() => this.exec(method, args, o)) : this.exec(method, args, o);
      default:
        return this.all.run(() => this.exec(method, args, o));
    }
  }

  /** The script's name in messages (as nbdkit: the path it runs). */
  who(method: string): string {
    return this.scriptFor(method) ?? "sh";
  }

  private async exec(method: string, args: readonly string[], o: CallOptions): Promise<Outcome> {
    const file = this.scriptFor(method);
    if (file === undefined) return { status: S.MISSING, stdout: Buffer.alloc(0), length: 0 };
    const r = await runScript(file, [method, ...args], { env: this.env, input: o.input, into: o.into });
    if (r.spawnError) throw new NbdError(NBD_EIO, `${file}: ${r.spawnError.message}`);
    if (r.code === null) throw new NbdError(NBD_EIO, `${file}: script terminated by signal ${r.signal}`);
    if (r.overflow) throw new NbdError(NBD_EIO, `${file}: ${method} printed more than ${MAX_STDOUT} bytes`);
    const conn = o.handle?.conn ?? o.conn;
    let fallback = NBD_EIO;
    switch (r.code) {
      case S.OK:
      case S.MISSING:
      case S.FALSE:
        if (r.stdinError && r.code === S.OK) {
          throw new NbdError(
            NBD_EIO,
            `${file}: write to script failed because of a broken pipe: ` +
              "this can happen if the script exits without consuming stdin, which usually indicates a bug in the script",
          );
        }
        return { status: r.code, stdout: r.stdout, length: r.stdoutLength };
      case S.SHUTDOWN_OK:
        this.shutdown();
        return { status: S.OK, stdout: r.stdout, length: r.stdoutLength };
      case S.SHUTDOWN_ERR:
        this.shutdown();
        fallback = NBD_ESHUTDOWN;
        break;
      case S.DISC_FORCE:
        // The client gets no reply. An error (nbdkit: "missing") also stops
        // an open or a round of can_* questions from going on.
        conn?.disconnect(true);
        throw new NbdError(NBD_ESHUTDOWN, `${file}: ${method}: the script asked to drop the client (status 6)`);
      case S.DISC_SOFT_OK:
        conn?.disconnect(false);
        return { status: S.OK, stdout: r.stdout, length: r.stdoutLength };
      case S.DISC_SOFT_ERR:
        conn?.disconnect(false);
        fallback = NBD_ESHUTDOWN;
        break;
    }
    throw S.scriptError(file, r.stderr, fallback);
  }

  private shutdown(): void {
    if (this.services) this.services.shutdown("the script asked the server to shut down");
    else this.shutdownWanted = true;
  }

  /** dump_plugin's output (synchronous: --dump-plugin prints it at once). */
  dumpPlugin(): string {
    let s = `max_known_status=${S.MAX_KNOWN_STATUS}\n`;
    const file = this.scriptFor("dump_plugin");
    if (file !== undefined) {
      const r = runScriptSync(file, ["dump_plugin"], this.env);
      if (r.code === S.OK) s += r.stdout;
    }
    return s;
  }
}

/** "method returned unexpected code (3/false)": 3 from a method that is not a question. */
export function unexpectedFalse(who: string, method: string): NbdError {
  return new NbdError(NBD_EIO, `${who}: ${method} method returned unexpected code (3/false)`);
}
