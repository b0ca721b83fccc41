// The command line, parsed the way nbdkit's getopt_long does: options may
// come anywhere (before or after PLUGIN), "--" ends them, the first operand
// is the PLUGIN and the rest are [KEY=]VALUE parameters, kept as strings.
// Pure: argv in, CliArgs out, or a CliError with a one-line message.

import { Command, CommanderError } from "commander";
import type { InspectTarget } from "../status/watch.js";
import { parseDebugFlag, type DebugFlag } from "./debug-flags.js";
import { CliError } from "./errors.js";
import type { LogMode } from "./log.js";

export type TlsMode = "off" | "on" | "require";
export type { LogMode };

export const DEFAULT_PORT = 10809;
/** nbdkit's default number of threads per connection (parallel plugins). */
export const DEFAULT_THREADS = 16;

export interface CliArgs {
  /** Built-in plugin name or path to a .js/.mjs/.ts file. */
  plugin?: string;
  /** [KEY=]VALUE parameters after PLUGIN, in order, unparsed. */
  params: string[];
  /** --filter values, outermost (first given) first. */
  filters: string[];
  /** -U SOCKET; "-" asks for a private socket in a fresh temporary directory. */
  unix?: string;
  port?: number;
  ipaddr?: string;
  /** -4 / -6 (the last one given wins). */
  ipFamily?: 4 | 6;
  foreground: boolean;
  pidfile?: string;
  readonly: boolean;
  exportName?: string;
  threads: number;
  single: boolean;
  run?: string;
  exitWithParent: boolean;
  verbose: boolean;
  tls: TlsMode;
  /** --tls was given (without it, TLS follows the credentials found, as nbdkit). */
  tlsGiven?: boolean;
  tlsCertificates?: string;
  tlsPsk?: string;
  tlsVerifyPeer: boolean;
  /** --log; undefined: stderr, or syslog once forked into the background (as nbdkit). */
  log?: LogMode;
  /** --keepalive: SO_KEEPALIVE on TCP connections. */
  keepalive: boolean;
  /** --timeout=SECONDS for the handshake (0: none); undefined: the server's defaults. */
  timeout?: number;
  /** --no-sr / --no-structured-replies. */
  noStructuredReplies: boolean;
  /** --no-mc / --no-meta-contexts. */
  noMetaContexts: boolean;
  /** --experimental-list-hier: serve NBD_OPT_LIST_HIER (docs/list-hier.md). */
  listHier: boolean;
  /** --workers: transmission worker threads (undefined: one per core beyond the first). */
  workers?: number;
  /** --mask-handshake=MASK: global handshake flags the server may advertise. */
  maskHandshake?: number;
  /** --short-options / --long-options: print the option names and exit. */
  listOptions?: "short" | "long";
  /** --inspect=stderr|ws://HOST:PORT (repeatable): watch the machines' transitions. */
  inspect: InspectTarget[];
  /** --status-page=[HOST:]PORT: the live status page (host default 127.0.0.1). */
  statusPage?: { host?: string; port: number };
  /** -D NAME.FLAG=N (see debug-flags.ts). */
  debugFlags: DebugFlag[];
  help: boolean;
  version: boolean;
  dumpPlugin: boolean;
  dumpConfig: boolean;
  /** --check: type-check and load PLUGIN and --filter files, then exit. */
  check: boolean;
}

export function defaultArgs(): CliArgs {
  return {
    params: [],
    filters: [],
    foreground: false,
    readonly: false,
    threads: DEFAULT_THREADS,
    single: false,
    exitWithParent: false,
    verbose: false,
    tls: "off",
    tlsVerifyPeer: false,
    keepalive: false,
    noStructuredReplies: false,
    noMetaContexts: false,
    listHier: false,
    inspect: [],
    debugFlags: [],
    help: false,
    version: false,
    dumpPlugin: false,
    dumpConfig: false,
    check: false,
  };
}

export interface OptionSpec {
  /** Commander flags, e.g. "-p, --port <PORT>". */
  flags: string;
  description: string;
  /** nbdkit's alternative spellings and options we only reject: not in help. */
  hidden?: boolean;
  /** Known only to be refused: not listed by --short-options / --long-options. */
  refused?: boolean;
  apply(a: CliArgs, value: string): void;
}

const unsupported = (what: string) => () => {
  throw new CliError(`${what} is not supported by nbdstate`);
};

/** Every option, in the order --help lists them. */
export const OPTIONS: readonly OptionSpec[] = [
  { flags: "-4, --ipv4-only", description: "listen on IPv4 addresses only", apply: (a) => void (a.ipFamily = 4) },
  { flags: "-6, --ipv6-only", description: "listen on IPv6 addresses only", apply: (a) => void (a.ipFamily = 6) },
  {
    flags: "--check",
    description: "type-check PLUGIN and --filter files (TypeScript), load them, and exit",
    apply: (a) => void (a.check = true),
  },
  {
    flags: "-D, --debug <NAME.FLAG=N>",
    description: "set a debug flag (nbdstate.backend, nbdstate.server, nbdstate.environ, or a plugin's)",
    apply: (a, v) => void a.debugFlags.push(parseDebugFlag(v)),
  },
  { flags: "--dump-config", description: "print the build configuration and exit", apply: (a) => void (a.dumpConfig = true) },
  { flags: "--dump-plugin", description: "print information about PLUGIN and exit", apply: (a) => void (a.dumpPlugin = true) },
  { flags: "-e, --exportname <EXPORTNAME>", description: "export name (for --run's $uri, and for clients asking for \"\")", apply: (a, v) => void (a.exportName = v) },
  { flags: "--export <EXPORTNAME>", description: "", hidden: true, apply: (a, v) => void (a.exportName = v) },
  { flags: "--export-name <EXPORTNAME>", description: "", hidden: true, apply: (a, v) => void (a.exportName = v) },
  { flags: "--exit-with-parent", description: "exit when the parent process exits (implies -f)", apply: (a) => void (a.exitWithParent = true) },
  { flags: "--filter <FILTER>", description: "add a filter (repeatable; the first given is the outermost)", apply: (a, v) => void a.filters.push(v) },
  { flags: "-f, --foreground", description: "do not fork into the background", apply: (a) => void (a.foreground = true) },
  { flags: "--no-fork", description: "", hidden: true, apply: (a) => void (a.foreground = true) },
  { flags: "--help", description: "print this help (with PLUGIN: and its parameters) and exit", apply: (a) => void (a.help = true) },
  {
    flags: "--inspect <stderr|ws://HOST:PORT>",
    description: "watch the machines: a line per transition on stderr, or every actor's events to an XState inspector",
    apply: (a, v) => void a.inspect.push(parseInspect(v)),
  },
  { flags: "-i, --ipaddr <IPADDR>", description: "listen on this address (default: all)", apply: (a, v) => void (a.ipaddr = v) },
  { flags: "--ip-addr <IPADDR>", description: "", hidden: true, apply: (a, v) => void (a.ipaddr = v) },
  { flags: "--keepalive", description: "enable TCP keepalives (SO_KEEPALIVE) on TCP connections", apply: (a) => void (a.keepalive = true) },
  { flags: "--log <stderr|syslog|null>", description: "where error messages go (default stderr; syslog once in the background)", apply: (a, v) => void (a.log = parseLog(v)) },
  { flags: "--long-options", description: "list the long options and exit (for bash completion)", apply: (a) => void (a.listOptions = "long") },
  {
    flags: "--mask-handshake <MASK>",
    description: "advertise only these global handshake flags (1: fixed newstyle, 2: no zeroes)",
    apply: (a, v) => void (a.maskHandshake = parseUnsigned("mask-handshake", v)),
  },
  { flags: "-n, --newstyle", description: "use the newstyle protocol (the default; no-op)", apply: () => {} },
  { flags: "--new-style", description: "", hidden: true, apply: () => {} },
  { flags: "--no-mc", description: "do not advertise meta contexts (block status)", apply: (a) => void (a.noMetaContexts = true) },
  { flags: "--no-meta-contexts", description: "", hidden: true, apply: (a) => void (a.noMetaContexts = true) },
  {
    flags: "--experimental-list-hier",
    description: "serve NBD_OPT_LIST_HIER, one level of the export tree at a time (experimental: docs/list-hier.md)",
    apply: (a) => void (a.listHier = true),
  },
  { flags: "--no-sr", description: "do not advertise structured replies", apply: (a) => void (a.noStructuredReplies = true) },
  { flags: "--no-structured-replies", description: "", hidden: true, apply: (a) => void (a.noStructuredReplies = true) },
  { flags: "-o, --oldstyle", description: "", hidden: true, refused: true, apply: unsupported("the oldstyle protocol (-o)") },
  { flags: "--old-style", description: "", hidden: true, refused: true, apply: unsupported("the oldstyle protocol (-o)") },
  { flags: "-P, --pidfile <PIDFILE>", description: "write the server's pid to PIDFILE once it listens", apply: (a, v) => void (a.pidfile = v) },
  { flags: "--pid-file <PIDFILE>", description: "", hidden: true, apply: (a, v) => void (a.pidfile = v) },
  { flags: "-p, --port <PORT>", description: `TCP port to listen on (default ${DEFAULT_PORT})`, apply: (a, v) => void (a.port = parsePort(v)) },
  { flags: "-r, --readonly", description: "export read-only", apply: (a) => void (a.readonly = true) },
  { flags: "--read-only", description: "", hidden: true, apply: (a) => void (a.readonly = true) },
  { flags: "--run <COMMAND>", description: "run COMMAND with $uri etc. set; exit when it does (captive)", apply: (a, v) => void (a.run = v) },
  { flags: "--short-options", description: "list the short options and exit (for bash completion)", apply: (a) => void (a.listOptions = "short") },
  { flags: "-s, --single", description: "serve one connection on stdin/stdout, then exit", apply: (a) => void (a.single = true) },
  {
    flags: "--status-page <[HOST:]PORT>",
    description: "serve a live page of the machines' diagrams and states (host default 127.0.0.1)",
    apply: (a, v) => void (a.statusPage = parseStatusPage(v)),
  },
  { flags: "--stdin", description: "", hidden: true, apply: (a) => void (a.single = true) },
  { flags: "-t, --threads <THREADS>", description: `requests in flight per connection (default ${DEFAULT_THREADS})`, apply: (a, v) => void (a.threads = parseThreads(v)) },
  {
    flags: "--timeout <TIMEOUT>",
    description: "seconds a client has for each step of the handshake (0: no limit)",
    apply: (a, v) => void (a.timeout = parseUnsigned("timeout", v)),
  },
  { flags: "--tls <off|on|require>", description: "disable, enable or require TLS", apply: (a, v) => {
    a.tls = parseTls(v);
    a.tlsGiven = true;
  } },
  { flags: "--tls-certificates <DIR>", description: "TLS certificates directory", apply: (a, v) => void (a.tlsCertificates = v) },
  { flags: "--tls-psk <PSKFILE>", description: "TLS pre-shared keys file", apply: (a, v) => void (a.tlsPsk = v) },
  { flags: "--tls-verify-peer", description: "verify TLS client certificates", apply: (a) => void (a.tlsVerifyPeer = true) },
  {
    flags: "--workers <N>",
    description: "worker threads for transmission, for plugins that share their data (default: one per core beyond the first; 0: none)",
    apply: (a, v) => void (a.workers = parseWorkers(v)),
  },
  { flags: "-U, --unix <SOCKET>", description: "listen on a Unix socket (\"-\": a private one, for --run)", apply: (a, v) => void (a.unix = v) },
  { flags: "-v, --verbose", description: "verbose messages on stderr", apply: (a) => void (a.verbose = true) },
  { flags: "-V, --version", description: "print the version and exit", apply: (a) => void (a.version = true) },
  { flags: "-g, --group <GROUP>", description: "", hidden: true, refused: true, apply: unsupported("-g (--group)") },
  { flags: "-u, --user <USER>", description: "", hidden: true, refused: true, apply: unsupported("-u (--user)") },
  { flags: "--selinux-label <LABEL>", description: "", hidden: true, refused: true, apply: unsupported("--selinux-label") },
  { flags: "--swap", description: "", hidden: true, refused: true, apply: unsupported("--swap") },
  { flags: "--vsock", description: "", hidden: true, refused: true, apply: unsupported("--vsock") },
];

export function parsePort(v: string): number {
  if (!/^[0-9]{1,5}$/.test(v) || Number(v) > 65535) throw new CliError(`-p: invalid port number '${v}'`);
  return Number(v);
}

/** As nbdkit_parse_unsigned("threads", ...); 0 means the default. */
export function parseThreads(v: string): number {
  if (/^\s*-/.test(v)) throw new CliError("threads: negative numbers are not allowed");
  const m = /^\s*\+?([0-9]+)(.*)$/.exec(v);
  if (!m) throw new CliError(`threads: could not parse number: "${v}"`);
  if (m[2] !== "") throw new CliError(`threads: could not parse number: "${v}": trailing garbage`);
  const n = Number(m[1]);
  if (n > 0x7fffffff) throw new CliError(`threads: could not parse number: "${v}": value too large`);
  return n === 0 ? DEFAULT_THREADS : n;
}

/** --workers=N: 0 to 64. */
export function parseWorkers(v: string): number {
  const n = parseUnsigned("workers", v);
  if (n > 64) throw new CliError(`workers: ${v} is more than 64`);
  return n;
}

/** As nbdkit_parse_unsigned: decimal, 0x hex or 0 octal, no sign, no trailing garbage. */
export function parseUnsigned(what: string, v: string): number {
  const t = v.trim();
  if (t.startsWith("-")) throw new CliError(`${what}: negative numbers are not allowed`);
  const m = /^\+?(0x[0-9a-f]+|0[0-7]*|[1-9][0-9]*)$/i.exec(t);
  if (!m) throw new CliError(`${what}: could not parse number: "${v}"`);
  const b = m[1]!;
  const n = /^0x/i.test(b) ? parseInt(b.slice(2), 16) : b.length > 1 && b.startsWith("0") ? parseInt(b, 8) : Number(b);
  if (n > 0xffffffff) throw new CliError(`${what}: could not parse number: "${v}": value too large`);
  return n;
}

/** --tls=off|on|require, or a boolean as nbdkit accepts (yes/no, 1/0 ...). */
export function parseTls(v: string): TlsMode {
  const s = v.trim().toLowerCase();
  if (s === "require" || s === "required") return "require";
  if (["on", "1", "true", "yes"].includes(s)) return "on";
  if (["off", "0", "false", "no"].includes(s)) return "off";
  throw new CliError(`--tls must be off, on or require, not '${v}'`);
}

/** --inspect=stderr, or the URL of an XState inspector's WebSocket endpoint. */
export function parseInspect(v: string): InspectTarget {
  if (v === "stderr") return { kind: "stderr" };
  if (/^wss?:\/\//i.test(v)) {
    try {
      return { kind: "ws", url: new URL(v).href };
    } catch {
      /* below */
    }
  }
  throw new CliError(`--inspect must be stderr or ws://HOST:PORT, not '${v}'`);
}

/** --status-page=PORT, HOST:PORT or [IPV6]:PORT; without a host, 127.0.0.1 (chosen by the page's server). */
export function parseStatusPage(v: string): { host?: string; port: number } {
  const m = /^(?:\[([^\]]+)\]:|([^:[\]]+):)?([0-9]{1,5})$/.exec(v);
  if (!m || Number(m[3]) > 65535) throw new CliError(`--status-page must be [HOST:]PORT, not '${v}'`);
  const host = m[1] ?? m[2];
  return host === undefined ? { port: Number(m[3]) } : { host, port: Number(m[3]) };
}

function parseLog(v: string): LogMode {
  if (v === "stderr" || v === "syslog" || v === "null") return v;
  throw new CliError('--log must be "stderr", "syslog" or "null"');
}

/** The commander program; parsing applies each option, in order, to `a`. */
export function buildCommand(a: CliArgs): Command {
  const cmd = new Command("nbdstate")
    .helpOption(false)
    .argument("[plugin]")
    .argument("[params...]")
    .allowExcessArguments(true)
    .exitOverride()
    .configureOutput({ writeOut: () => {}, writeErr: () => {}, outputError: () => {} });
  for (const spec of OPTIONS) {
    cmd.option(spec.flags, spec.description);
    const opt = cmd.options[cmd.options.length - 1]!;
    cmd.on(`option:${opt.name()}`, (value?: string) => spec.apply(a, value ?? ""));
  }
  return cmd;
}

/** Turn commander's messages into getopt-like one-liners. */
function fromCommander(e: CommanderError, cmd: Command): CliError {
  const text = e.message.replace(/^error: /, "");
  const quoted = /'([^']*)'/.exec(text)?.[1] ?? "";
  const hint = /\(Did you mean (.*)\?\)/.exec(text)?.[1];
  switch (e.code) {
    case "commander.unknownOption": {
      const flag = quoted.split("=")[0]!;
      if (quoted.includes("=") && cmd.options.some((o) => o.long === flag)) {
        return new CliError(`option '${flag}' doesn't allow an argument`);
      }
      return new CliError(`unrecognized option '${quoted}'${hint ? ` (did you mean ${hint}?)` : ""}`);
    }
    case "commander.optionMissingArgument":
      return new CliError(`option '${quoted.replace(/ <.*>$/, "")}' requires an argument`);
    default:
      return new CliError(text.replace(/\s*\n\s*/g, " "));
  }
}

/** Parse the arguments after the program name. Throws CliError. */
export function parseArgs(argv: readonly string[]): CliArgs {
  const a = defaultArgs();
  const cmd = buildCommand(a);
  try {
    cmd.parse([...argv], { from: "user" });
  } catch (e) {
    if (e instanceof CommanderError) throw fromCommander(e, cmd);
    throw e;
  }
  const [plugin, ...params] = cmd.args;
  a.plugin = plugin;
  a.params = params;
  check(a);
  return a;
}

function check(a: CliArgs): void {
  if (a.help || a.version || a.dumpConfig || a.listOptions) return;
  if (a.plugin === undefined) {
    throw new CliError("no plugins given on the command line (see 'nbdstate --help')");
  }
  const port = a.port !== undefined;
  const unix = a.unix !== undefined;
  const run = a.run !== undefined;
  if (
    (port && unix) ||
    (port && a.single) ||
    (unix && a.single) ||
    (a.single && run) ||
    (a.single && a.dumpPlugin) ||
    (a.dumpPlugin && run)
  ) {
    throw new CliError("--dump-plugin, -p, --run, -s or -U options cannot be used in this combination");
  }
  if (a.run !== undefined && a.run.trim() === "") throw new CliError("--run: the command is empty");
}

/**
 * nbdkit's rule for a parameter: "KEY=VALUE" when KEY is a letter followed by
 * letters, digits, '.', '_' or '-'; anything else is a bare VALUE.
 */
export function isConfigKey(key: string): boolean {
  return /^[A-Za-z][A-Za-z0-9._-]*$/.test(key);
}
