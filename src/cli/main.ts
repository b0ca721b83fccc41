// The nbdstate command: parse the nbdkit-style command line, build the
// layer stack, run its global lifecycle, serve, and shut down cleanly.
// main() resolves with the exit status once the server is done.

import type { Listener } from "../actors/server-options.js";
import { startServer, type RunningServer } from "../actors/server.js";
import { Stack, type StackOptions } from "../backend/stack.js";
import type { Filter, Plugin } from "../backend/types.js";
import { builtinOptions } from "../options/index.js";
import { listHierOption } from "../options/list-hier.js";
import { parseArgs, type CliArgs } from "./args.js";
import { captiveEnv, runCaptive, type Captive } from "./captive.js";
import { DAEMON_ENV, daemonChildFd, ReadinessReporter, runDaemonParent } from "./daemon.js";
import { watch, type Watching } from "../status/watch.js";
import { runCheck } from "./check.js";
import { applyLayerFlags, debugSettings, type DebugArea, type DebugSettings } from "./debug-flags.js";
import { CliError, errorMessage, PROGRAM, reportError } from "./errors.js";
import { dumpConfigText, dumpPluginText, optionNamesText, pluginHelpText, usageText, versionText } from "./help.js";
import { runLs } from "./ls.js";
import { listeningUri, makePrivateSocket, planListeners, type ListenerPlan } from "./listeners.js";
import { makeLogSink, type LogSink } from "./log.js";
import { listBuiltins, loadFilter, loadPlugin, type Loaded } from "./load.js";
import { TransmissionWorkers } from "../threads/pool.js";
import { availableParallelism } from "node:os";
import { resolveParams } from "./params.js";
import { SHUTDOWN_SIGNALS, onShutdownSignals, watchParent, writePidfile } from "./process-hooks.js";
import { loadTls, type TlsSetup } from "./tls.js";
import { collectStartupHeap } from "../sys/trim.js";

/** The server implements TLS (--tls=on|require, STARTTLS). */
export const TLS_SUPPORTED = true;

const out = (s: string) => void process.stdout.write(s);

/** Debug lines (-v, -D): always stderr, never the --log sink (as nbdkit). */
const debugLine = (m: string) => void process.stderr.write(`${PROGRAM}: debug: ${m}\n`);

/** How serving reports: error lines to the --log sink, debug lines by area. */
export interface Reporting {
  sink: LogSink;
  debug: DebugSettings;
  /** A debug line of an area, printed when -v or -D says so. */
  log(area: DebugArea): (m: string) => void;
  /** An error line ("nbdstate: error: ..." on stderr). */
  error(e: unknown): void;
}

export function reporting(sink: LogSink, debug: DebugSettings): Reporting {
  const loggers = new Map<DebugArea, (m: string) => void>();
  return {
    sink,
    debug,
    log(area) {
      let l = loggers.get(area);
      if (!l) {
        l = (m) => {
          if (debug.enabled(area)) debugLine(m);
        };
        loggers.set(area, l);
      }
      return l;
    },
    error: (e) => sink.write("error", `error: ${errorMessage(e)}`),
  };
}

/** What the command line asks of the server actor, beyond the listeners. */
/** The options served with --experimental-list-hier: one array, so its machine is assembled once. */
const WITH_LIST_HIER = [...builtinOptions, listHierOption];

export function serverOptions(a: CliArgs, listeners: Listener[], tls: TlsSetup, log: (m: string) => void): Parameters<typeof startServer>[1] {
  const opts: Parameters<typeof startServer>[1] = {
    log,
    listeners,
    readonly: a.readonly,
    threads: a.threads,
    tls: tls.mode,
    singleConnection: a.single,
  };
  if (tls.credentials) opts.tlsCredentials = tls.credentials;
  if (a.noStructuredReplies) opts.noStructuredReplies = true;
  if (a.noMetaContexts) opts.noMetaContexts = true;
  if (a.listHier) opts.optionRecords = WITH_LIST_HIER;
  if (a.maskHandshake !== undefined) opts.maskHandshake = a.maskHandshake;
  if (a.timeout !== undefined) {
    // --timeout=N: the client's flags and each option must come within N s (0: no limit).
    opts.handshakeTimeoutMs = a.timeout * 1000;
    opts.optionTimeoutMs = a.timeout * 1000;
  }
  return opts;
}

async function builtins(): Promise<{ plugins: string[]; filters: string[] } | undefined> {
  try {
    return await listBuiltins();
  } catch {
    return undefined;
  }
}

async function loadLayers(a: CliArgs): Promise<{ plugin: Loaded<Plugin>; filters: Loaded<Filter>[] }> {
  const plugin = await loadPlugin(a.plugin!);
  const filters: Loaded<Filter>[] = [];
  for (const f of a.filters) filters.push(await loadFilter(f));
  return { plugin, filters };
}

/** --help, --version, --dump-config, --dump-plugin: the status, or undefined to serve. */
async function infoMode(a: CliArgs): Promise<number | undefined> {
  if (a.listOptions) return out(optionNamesText(a.listOptions)), 0;
  if (a.check) return runCheck(a.plugin!, a.filters, out);
  if (a.help && a.plugin === undefined) return out(usageText(await builtins())), 0;
  if (a.dumpConfig) return out(dumpConfigText()), 0;
  if (a.version && a.plugin === undefined) return out(versionText()), 0;
  if (!a.help && !a.version && !a.dumpPlugin) return undefined;
  const { plugin, filters } = await loadLayers(a);
  if (a.help) return out(pluginHelpText(plugin, filters, await builtins())), 0;
  if (a.version) return out(versionText([...filters, plugin])), 0;
  // As nbdkit: the parameters go to config (not configComplete) first, so
  // a script plugin knows its script (sh ./script --dump-plugin).
  const stack = new Stack(plugin.layer, filters.map((f) => f.layer));
  try {
    await stack.load();
    for (const [key, value] of resolveParams(a.params, plugin.layer.magicConfigKey, plugin.layer.name)) {
      await stack.config(key, value);
    }
    out(dumpPluginText(plugin));
  } finally {
    await stack.unload();
  }
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  const fd = daemonChildFd();
  const ready = fd !== undefined ? new ReadinessReporter(fd) : undefined;
  if (ready) delete process.env[DAEMON_ENV];
  let verbose = argv.includes("-v") || argv.includes("--verbose");
  let rep: Reporting | undefined;
  try {
    // `nbdstate ls URI`: the client command that browses NBD_OPT_LIST_HIER ("ls" is no plugin's name).
    if (argv[0] === "ls") return await runLs(argv.slice(1), (s) => void process.stdout.write(s), (s) => void process.stderr.write(`${s}\n`));
    const args = parseArgs(argv);
    verbose = args.verbose;
    const info = await infoMode(args);
    if (info !== undefined) return info;
    const debug = debugSettings(args.debugFlags, verbose);
    const foregroundAsked = args.foreground || args.single || args.run !== undefined || args.exitWithParent;
    // As nbdkit: stderr, unless forked into the background (then syslog).
    rep = reporting(await makeLogSink(args.log ?? (ready && !foregroundAsked ? "syslog" : "stderr")), debug);
    for (const w of debug.warnings) rep.sink.write("warning", `warning: ${w}`);
    if (debug.environ) {
      for (const [k, v] of Object.entries(process.env)) debugLine(`environ: ${k}=${v ?? ""}`);
    }
    if (args.tls !== "off" && !TLS_SUPPORTED) throw new CliError("TLS is not supported yet");
    // Certificates and keys are read now: a missing or bad file stops the start (before forking).
    const tls = loadTls(args);
    const cred = tls.credentials;
    if (cred) rep.log("server")(`TLS ${tls.mode}: ${cred.kind === "psk" ? `PSK keys from ${cred.file}` : `certificates from ${cred.dir}`}`);
    const plan = planListeners(args, process.env, process.pid);
    const foreground =
      args.foreground || args.single || args.run !== undefined || args.exitWithParent || plan.activation || !!ready;
    // The child's startup errors, relayed by the parent, go where --log says.
    if (!foreground) return await runDaemonParent(argv, (m) => rep!.error(m));
    return await serve(args, plan, ready, rep, tls);
  } catch (e) {
    if (ready) ready.error(e);
    else if (rep) {
      rep.error(e);
      if (verbose && e instanceof Error && e.stack && !(e instanceof CliError)) process.stderr.write(e.stack + "\n");
    } else reportError(e, verbose);
    return 1;
  } finally {
    rep?.sink.close();
  }
}

interface Started {
  stack: Stack;
  server: RunningServer;
  /** --inspect and --status-page (closed once the server is done). */
  watching: Watching;
  /** Synchronous cleanups (temporary directory, pid file), run at exit. */
  cleanups: Array<() => void>;
  /** Transmission worker threads, if connections can move to them. */
  workers?: TransmissionWorkers;
}

/**
 * Transmission workers (src/threads), when this server can use them: a
 * plugin that shares its data (PluginThreads), no filters (a filter's
 * state lives in one thread), not TLS-only (TLS connections stay on the
 * main thread) and not -s. The count is --workers, by default one per
 * core beyond the first.
 */
function startWorkers(
  a: CliArgs, plugin: Loaded<Plugin>, filters: Loaded<Filter>[], params: [string, string][], tls: TlsSetup, rep: Reporting,
): TransmissionWorkers | undefined {
  const log = rep.log("server");
  const count = a.workers ?? Math.min(7, availableParallelism() - 1);
  if (count <= 0) return undefined;
  const why =
    a.single ? "-s" : tls.mode === "require" ? "--tls=require" : filters.length > 0 ? "filters" : !plugin.layer.threads ? `the ${plugin.layer.name} plugin` : "";
  if (why !== "") {
    log(`no transmission workers: ${why}`);
    return undefined;
  }
  const state = plugin.layer.threads!.share();
  if (state === null) {
    log(`no transmission workers: the ${plugin.layer.name} plugin cannot share this configuration`);
    return undefined;
  }
  log(`transmission workers: ${count}`);
  return new TransmissionWorkers({ count, plugin: a.plugin!, params, state, error: (m) => rep.error(m), log });
}

/** Load, configure and start: everything up to listening. Undoes itself on failure. */
async function start(a: CliArgs, plan: ListenerPlan, rep: Reporting, tls: TlsSetup): Promise<Started> {
  const { plugin, filters } = await loadLayers(a);
  // -D NAME.FLAG=N for a plugin or filter: set before its load(), as nbdkit does at dlopen.
  const unused = new Set(rep.debug.layerFlags.keys());
  for (const l of [plugin, ...filters]) {
    const flags = rep.debug.layerFlags.get(l.layer.name);
    if (!flags) continue;
    unused.delete(l.layer.name);
    for (const w of applyLayerFlags(l.layer.name, l.debugFlags, flags)) rep.sink.write("warning", `warning: ${w}`);
  }
  for (const name of unused) {
    for (const f of rep.debug.layerFlags.get(name)!) rep.sink.write("warning", `warning: debug flag -D ${name}.${f.flag} was not used (no plugin or filter is called ${name})`);
  }
  const log = rep.log("backend");
  const watching = watch({
    inspect: a.inspect,
    statusPage: a.statusPage,
    write: (line) => void process.stderr.write(`${PROGRAM}: inspect: ${line}\n`),
    log: rep.log("server"),
  });
  // Without --inspect or --status-page no actor gets an inspect option at all.
  // Error lines of the stack (ServerServices.log, failed opens and requests) go to the --log sink.
  const stackOpts: StackOptions = { log, error: (m) => rep.sink.write("error", m) };
  if (watching.inspect) stackOpts.inspect = watching.inspect;
  const stack = new Stack(plugin.layer, filters.map((f) => f.layer), stackOpts);
  const cleanups: Array<() => void> = [];
  let loaded = false;
  let workers: TransmissionWorkers | undefined;
  const params = resolveParams(a.params, plugin.layer.magicConfigKey, plugin.layer.name);
  try {
    await stack.load();
    loaded = true;
    for (const [key, value] of params) {
      log(`config key=${key}, value=${value}`);
      await stack.config(key, value);
    }
    await stack.configComplete();
    await stack.getReady();
    await stack.afterFork();

    let listeners: Listener[] = plan.listeners;
    if (plan.privateUnix) {
      const sock = makePrivateSocket();
      cleanups.push(sock.remove);
      listeners = [{ kind: "unix", path: sock.path }];
    }
    if (plan.activation) {
      for (const v of ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"]) delete process.env[v];
    }
    const opts = serverOptions(a, listeners, tls, rep.log("server"));
    if (watching.inspect) opts.inspect = watching.inspect;
    workers = startWorkers(a, plugin, filters, params, tls, rep);
    if (workers) {
      // Ready before the first client: what a client meets does not change under it.
      await workers.settled;
      opts.workers = workers;
    }
    collectStartupHeap();
    const server = await startServer(stack, opts);
    try {
      await watching.serve(stack, server);
    } catch (e) {
      await server.shutdown();
      throw new CliError(`--status-page: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (a.pidfile !== undefined) cleanups.push(writePidfile(a.pidfile).remove);
    return { stack, server, watching, cleanups, workers };
  } catch (e) {
    await workers?.close();
    await watching.close().catch(() => {});
    if (loaded) await stack.unload().catch(() => {});
    runAll(cleanups);
    throw e;
  }
}

function runAll(fns: Array<() => void>): void {
  for (const f of fns.splice(0).reverse()) {
    try {
      f();
    } catch {
      /* best effort */
    }
  }
}

/** Foreground serving until the server is done; the exit status. */
async function serve(a: CliArgs, plan: ListenerPlan, ready: ReadinessReporter | undefined, rep: Reporting, tls: TlsSetup): Promise<number> {
  const log = rep.log("server");
  // A signal while starting (the socket may already accept) is held, then honoured.
  let early: NodeJS.Signals | undefined;
  const removeEarly = onShutdownSignals((sig) => (early = sig), () => process.exit(1));
  let started: Awaited<ReturnType<typeof start>>;
  try {
    started = await start(a, plan, rep, tls);
  } finally {
    removeEarly();
  }
  const { stack, server, watching, cleanups, workers } = started;
  ready?.listening();
  log(`listening: ${listeningUri(server.address)}`);

  let captive: Captive | undefined;
  let stopping = false;
  const shutdown = (why: string) => {
    if (stopping) return;
    stopping = true;
    log(`shutting down: ${why}`);
    server.shutdown().catch((e: unknown) => rep.error(e));
  };
  const removeSignals = onShutdownSignals(
    (sig) => {
      // A captive command would otherwise outlive its server.
      if (captive && captive.child.exitCode === null && captive.child.signalCode === null) captive.child.kill(sig);
      shutdown(sig);
    },
    (sig) => {
      rep.error(`${sig} received again: exiting without a graceful shutdown`);
      rep.sink.close();
      runAll(cleanups);
      process.exit(1);
    },
  );
  if (early) shutdown(early);
  // nbdkit_shutdown from a plugin or filter (held if asked before listening).
  stack.onShutdownRequest(shutdown);
  const stopWatching = a.exitWithParent ? watchParent(() => shutdown("the parent process exited")) : undefined;

  if (a.run !== undefined) {
    const { uri, unixSocket, port } = server.address;
    const env = captiveEnv(process.env, { uri, unixSocket, port }, a.exportName ?? "", tls.mode);
    log(`running: ${a.run}`);
    captive = runCaptive(a.run, env, (m) => rep.error(m));
    void captive.status.then(() => shutdown("the --run command exited"));
  }

  try {
    await server.closed;
    stopWatching?.();
    if (!stopping) log("the server stopped");
    await workers?.close();
    await stack.unload(); // cleanup, then unload, layer by layer
  } finally {
    await watching.close().catch(() => {});
    runAll(cleanups);
    removeSignals();
    // Stopped: a late signal must not turn this clean exit into death by signal.
    for (const sig of SHUTDOWN_SIGNALS) process.on(sig, () => {});
  }
  return captive ? await captive.status : 0;
}
