// --run: captive nbdstate. The command runs under /bin/sh with $uri (and
// the deprecated $nbd), $unixsocket, $port, $exportname and $tls set; its
// exit status becomes ours.

import { spawn, type ChildProcess } from "node:child_process";
import { constants } from "node:os";
import type { TlsMode } from "./args.js";
import { nbdUri } from "./listeners.js";

export interface CaptiveWhere {
  uri: string;
  unixSocket?: string;
  port?: number;
}

/** The environment of the --run command (as nbdkit's captive.c sets it). */
export function captiveEnv(
  base: NodeJS.ProcessEnv,
  where: CaptiveWhere,
  exportName: string,
  tls: TlsMode,
): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...base };
  const uri = nbdUri(where, exportName, tls) ?? where.uri;
  env.uri = uri;
  env.nbd = uri;
  env.unixsocket = where.unixSocket ?? "";
  env.port = where.port !== undefined && where.unixSocket === undefined ? String(where.port) : "";
  env.exportname = exportName;
  if (tls === "off") delete env.tls;
  else env.tls = tls === "on" ? "1" : "2";
  // The socket activation variables were for us, not for the command.
  delete env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_FDNAMES;
  delete env.NBDSTATE_DAEMON_CHILD;
  return env;
}

export interface Captive {
  child: ChildProcess;
  /** Resolves with the exit status to use: the code, or 128+N if killed by signal N. */
  status: Promise<number>;
}

/** Start `sh -c COMMAND`. `onSignalled` receives the one-line note for a killed command. */
export function runCaptive(command: string, env: NodeJS.ProcessEnv, onNote: (msg: string) => void): Captive {
  const child = spawn("/bin/sh", ["-c", command], { stdio: "inherit", env });
  const status = new Promise<number>((resolve) => {
    child.once("error", (e) => {
      onNote(`--run: could not run /bin/sh: ${e.message}`);
      resolve(1);
    });
    child.once("exit", (code, signal) => {
      if (code !== null) return resolve(code);
      const num = signal ? (constants.signals as Record<string, number>)[signal] ?? 0 : 0;
      onNote(`external command was killed by signal ${num}`);
      resolve(128 + num);
    });
  });
  return { child, status };
}
