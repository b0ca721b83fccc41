#!/usr/bin/env node
// Side-by-side benchmark, nbdkit vs nbdstate, in one run (bench/README.md).
// Every group runs BENCH_ROUNDS rounds; each round starts a fresh server of
// each kind (one at a time, on a private unix socket) and flips which kind
// goes first. Figures are printed as measured, then medians and the ratio
// oriented so that > 1 always means nbdstate is better (faster, or smaller
// for memory), then a Markdown table for README.md.

import { execFileSync, spawn } from "node:child_process";
import { accessSync, closeSync, constants, copyFileSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const repo = dirname(here);

// ---- knobs ------------------------------------------------------------------

const ALL = ["copy", "fio", "null", "file", "tls", "rss", "filters"];
const EXTRA = ["cache", "cow"]; // bench/filters.sh's scenarios, not run by default
const env = process.env;
const rounds = intKnob("BENCH_ROUNDS", 3);
const size = sizeKnob("BENCH_COPY_SIZE", "1G");
const fioRuntime = intKnob("BENCH_FIO_RUNTIME", 10);
const idleConns = intKnob("BENCH_CONNS", 1000);
const delay = env.BENCH_DELAY || "2ms";
const only = (env.BENCH_ONLY || ALL.join(",")).split(/[,\s]+/).filter(Boolean);
const refCmd = (env.BENCH_NBDKIT_CMD || "nbdkit").split(/\s+/);
// The bin as users run it (its shebang sets the flags node runs it with).
const dutCmd = (env.BENCH_NBDSTATE_CMD || `${repo}/bin/nbdstate.js`).split(/\s+/);
const out = env.BENCH_OUT || "";
const tmpBase = env.BENCH_TMP || (isWritableDir("/dev/shm") ? "/dev/shm" : "/tmp");
for (const g of only) if (!ALL.includes(g) && !EXTRA.includes(g)) die(`unknown group '${g}' in BENCH_ONLY (${[...ALL, ...EXTRA].join(",")})`);

function intKnob(name, dflt) {
  const v = env[name];
  if (v === undefined || v === "") return dflt;
  if (!/^\d+$/.test(v) || Number(v) < 1) die(`${name} must be a positive integer, not '${v}'`);
  return Number(v);
}
function sizeKnob(name, dflt) {
  const v = env[name] || dflt;
  const m = /^(\d+)([KMGT]?)i?B?$/i.exec(v);
  if (!m) die(`${name}: bad size '${v}' (bytes, or K/M/G/T suffix)`);
  return Number(m[1]) * 1024 ** " KMGT".indexOf((m[2] || " ").toUpperCase());
}
function isWritableDir(p) {
  try { accessSync(p, constants.W_OK); return true; } catch { return false; }
}
function die(msg) {
  console.error(`bench: ${msg}`);
  process.exit(1);
}
const human = (bytes) => (bytes % 2 ** 30 === 0 ? `${bytes / 2 ** 30} GiB` : `${bytes / 2 ** 20} MiB`);

// ---- processes ----------------------------------------------------------------

const live = new Set(); // servers and helpers this script started, by ChildProcess

/** Run a command to completion; resolves with its duration in ms, rejects with its stderr. */
function run(argv, { timeoutMs = 600_000 } = {}) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(argv[0], argv.slice(1), { stdio: ["ignore", "ignore", "pipe"] });
    live.add(child);
    let err = "";
    child.stderr.on("data", (d) => (err += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", (e) => { clearTimeout(timer); live.delete(child); reject(e); });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      live.delete(child);
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (code === 0) resolve(ms);
      else reject(new Error(`${argv.join(" ")}: ${signal ? "killed by " + signal : "exit " + code}\n${err.trim()}`));
    });
  });
}
const succeeds = (argv) => run(argv, { timeoutMs: 30_000 }).then(() => true, () => false);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let work = "";
let clockTicks = 100; // per second, in /proc/PID/stat (getconf CLK_TCK, read in main)
let psk = "";
let src = "";

/** Start one server (-f -U SOCK ARGS...); resolves when it answers nbdinfo. */
async function startServer(kind, args, { tls = false, label = kind } = {}) {
  const cmd = kind === "nbdkit" ? refCmd : dutCmd;
  const sock = join(work, `${label}.sock`);
  rmSync(sock, { force: true });
  const log = join(work, `${label}.log`);
  const fd = openSync(log, "w");
  const tlsArgs = tls ? ["--tls=require", `--tls-psk=${psk}`] : [];
  const child = spawn(cmd[0], [...cmd.slice(1), "-f", "-U", sock, ...tlsArgs, ...args], { stdio: ["ignore", fd, fd] });
  closeSync(fd);
  live.add(child);
  let exited = false;
  child.on("exit", () => { exited = true; live.delete(child); });
  const uri = tls
    ? `nbds+unix://alice@/?socket=${sock}&tls-psk-file=${psk}`
    : `nbd+unix:///?socket=${sock}`;
  for (let i = 0; i < 400; i++) {
    if (exited) throw new Error(`${kind} exited before listening:\n${readFileSync(log, "utf8").trim()}`);
    if (existsSync(sock) && (await succeeds(["nbdinfo", "--size", uri]))) {
      return { kind, pid: child.pid, uri, stop: () => stopServer(child) };
    }
    await sleep(50);
  }
  await stopServer(child);
  throw new Error(`${kind} did not answer on ${sock} within 20 s:\n${readFileSync(log, "utf8").trim()}`);
}

async function stopServer(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  const t = setTimeout(() => child.kill("SIGKILL"), 10_000);
  await gone;
  clearTimeout(t);
}

/** VmRSS of a process, in MiB. */
function rssMiB(pid) {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) / 1024;
}

// ---- measurements ---------------------------------------------------------------

const copyTo = (uri) => run(["nbdcopy", src, uri]);
const copyFrom = (uri, ...opts) => run(["nbdcopy", ...opts, uri, "null:"]);

/** CPU time (user + system, all threads) a process has used so far, in µs. */
function cpuUs(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" "); // f[0] is field 3 (state)
  return ((Number(f[11]) + Number(f[12])) * 1e6) / clockTicks;
}

/**
 * fio's nbd engine, 4k at QD32 for BENCH_FIO_RUNTIME s against a server;
 * resolves with IOPS and the server's CPU time per request (µs), which the
 * machine's other load disturbs far less than IOPS.
 */
async function fio(server, rw, runtime = fioRuntime) {
  const uri = server.uri;
  const json = join(work, "fio.json");
  const cpu0 = cpuUs(server.pid);
  // fio prints "connected to NBD server" on stdout: the JSON goes to a file.
  await run(["fio", `--name=${rw}`, "--ioengine=nbd", `--uri=${uri}`, `--rw=${rw}`, "--bs=4k", "--iodepth=32",
    `--runtime=${runtime}`, "--time_based", "--norandommap", "--randrepeat=0",
    "--output-format=json", `--output=${json}`]);
  const cpu = cpuUs(server.pid) - cpu0;
  const job = JSON.parse(readFileSync(json, "utf8")).jobs[0];
  if (job.error) throw new Error(`fio ${rw}: job error ${job.error}`);
  const side = rw === "randread" ? job.read : job.write;
  return { iops: side.iops, ios: side.total_ios, cpu, cpuPerIo: cpu / side.total_ios };
}

/** Open n connections (handshake and NBD_OPT_GO each) with python3-libnbd; resolves with a close function. */
function holdConnections(uri, n) {
  return new Promise((resolve, reject) => {
    const child = spawn("/usr/bin/python3", [join(here, "idle-conns.py"), uri, String(n)], { stdio: ["pipe", "pipe", "pipe"] });
    live.add(child);
    let err = "";
    const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
    child.stderr.on("data", (d) => (err += d));
    child.stdout.on("data", (d) => {
      if (String(d).includes("ready")) {
        clearTimeout(timer);
        resolve(() => new Promise((r) => { child.once("close", r); child.stdin.end(); }));
      }
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      live.delete(child);
      reject(new Error(`idle-conns.py ended (${signal ?? code}) before it held ${n} connections:\n${err.trim()}`));
    });
  });
}

const memory = () => ["memory", `size=${size}`];
// The filters group's stack, BENCH_FILTER_ARGS to change it ("none": a
// second bare server, the control that shows the method's own noise).
const PASS_FILTERS = ["--filter=nofilter", "--filter=fua", "--filter=nozero", "--filter=limit", "--filter=ip"];
const PASS_PARAMS = ["fuamode=pass", "zeromode=plugin", "limit=0"];
const filterArgs = env.BENCH_FILTER_ARGS === "none" ? [] : env.BENCH_FILTER_ARGS?.split(/\s+/).filter(Boolean) ?? [...PASS_FILTERS, ...PASS_PARAMS];
const stack = !env.BENCH_FILTER_ARGS ? "5 pass-through" : filterArgs.length ? "BENCH_FILTER_ARGS" : "bare again";
const BURST = 2; // seconds per fio burst of the filters group
const BURSTS = Math.max(1, Math.round(fioRuntime / BURST)); // per server: as much fio time as one run

// Each group: sessions (one fresh server per session, per kind, per round),
// each with its command line and what to measure on it. rec(metric, value, unit).
// Units: ms (a copy of `size` bytes, shown as MiB/s), IOPS, MiB (memory).
const GROUPS = {
  copy: {
    title: `memory plugin, nbdcopy of ${human(size)}`,
    sessions: [{
      args: memory,
      async run(s, rec) {
        rec("memory: fresh write", await copyTo(s.uri), "ms");
        rec("memory: overwrite", await copyTo(s.uri), "ms");
        rec("memory: sequential read", await copyFrom(s.uri), "ms");
      },
    }],
  },
  fio: {
    title: `memory plugin (written first), fio 4k QD32, ${fioRuntime} s`,
    sessions: [{
      args: memory,
      async run(s, rec) {
        await copyTo(s.uri);
        const r = await fio(s, "randread");
        rec("memory: 4k random read", r.iops, "IOPS");
        rec("memory: server CPU per 4k read", r.cpuPerIo, "µs");
        const w = await fio(s, "randwrite");
        rec("memory: 4k random write", w.iops, "IOPS");
        rec("memory: server CPU per 4k write", w.cpuPerIo, "µs");
      },
    }],
  },
  null: {
    title: `null plugin, nbdcopy of ${human(size)}: the protocol path`,
    sessions: [{
      args: () => ["null", `size=${size}`],
      async run(s, rec) {
        rec("null: write", await copyTo(s.uri), "ms");
        rec("null: read (--no-extents)", await copyFrom(s.uri, "--no-extents"), "ms");
      },
    }],
  },
  file: {
    title: `file plugin on ${tmpBase}, nbdcopy of ${human(size)}`,
    sessions: [{
      args: () => ["file", join(work, "disk.img")],
      before: () => copyFileSync(src, join(work, "disk.img")),
      after: () => rmSync(join(work, "disk.img"), { force: true }),
      async run(s, rec) {
        rec("file on tmpfs: read", await copyFrom(s.uri), "ms");
        rec("file on tmpfs: write", await copyTo(s.uri), "ms");
      },
    }],
  },
  tls: {
    title: `TLS-PSK, memory plugin (written first), nbdcopy of ${human(size)}`,
    sessions: [{
      args: memory,
      tls: true,
      async run(s, rec) {
        await copyTo(s.uri);
        rec("TLS-PSK: write (memory, overwrite)", await copyTo(s.uri), "ms");
        rec("TLS-PSK: read (memory)", await copyFrom(s.uri), "ms");
      },
    }],
  },
  rss: {
    title: "server RSS (VmRSS; for nbdstate the node process)",
    sessions: [{
      args: memory,
      async run(s, rec) {
        await copyTo(s.uri);
        rec(`RSS: after writing ${human(size)}`, rssMiB(s.pid), "MiB");
      },
    }, {
      args: memory,
      async run(s, rec) {
        const before = rssMiB(s.pid);
        rec("RSS: fresh server", before, "MiB");
        const close = await holdConnections(s.uri, idleConns);
        await sleep(2000); // let the server settle (threads started, buffers allocated)
        const held = rssMiB(s.pid);
        await close();
        rec(`RSS: growth, ${idleConns} idle connections`, held - before, "MiB");
      },
    }],
  },
  filters: {
    title: `${filterArgs.join(" ") || "no filters"} vs the bare memory plugin (not written: reads of holes), fio 4k random read QD32, ` +
      `${BURSTS} bursts of ${BURST} s each, alternating`,
    sessions: [{
      // Both servers of a kind run side by side (the idle one costs nothing)
      // and fio alternates between them in short bursts, so a change of the
      // machine's load hits both alike: a whole fio run each, one after the
      // other, left the cost lost in the noise.
      args: memory,
      also: () => [...filterArgs.filter((a) => a.startsWith("-")), ...memory(), ...filterArgs.filter((a) => !a.startsWith("-"))],
      async run(bare, rec, filtered) {
        await fio(bare, "randread", 1); // untimed: V8 compiles the request path
        await fio(filtered, "randread", 1);
        const a = [], b = [];
        for (let k = 0; k < BURSTS; k++) {
          for (const s of k % 2 ? [filtered, bare] : [bare, filtered]) {
            (s === bare ? a : b).push(await fio(s, "randread", BURST));
          }
        }
        const sum = (xs, key) => xs.reduce((t, x) => t + x[key], 0);
        rec("filters: 4k random read, bare", sum(a, "iops") / BURSTS, "IOPS");
        rec(`filters: 4k random read, ${stack}`, sum(b, "iops") / BURSTS, "IOPS");
        rec("filters: server CPU per read, bare", sum(a, "cpu") / sum(a, "ios"), "µs");
        rec(`filters: server CPU per read, ${stack}`, sum(b, "cpu") / sum(b, "ios"), "µs");
        // The extra CPU per request, for each pair of neighbouring bursts;
        // their median shrugs off one disturbed burst.
        rec(`filters: extra CPU per read, ${stack}`, 100 * median(a.map((x, k) => b[k].cpuPerIo / x.cpuPerIo - 1)), "%");
      },
    }],
  },
  cache: {
    title: `cache over a slow memory plugin (delay ${delay}), ${human(size)}`,
    check: true,
    sessions: [{
      args: () => ["--filter=cache", "--filter=delay", ...memory(), "cache-on-read=true", `delay-read=${delay}`, `delay-write=${delay}`],
      async run(s, rec) {
        // --no-extents: the memory plugin's holes must be read too, through the delay.
        rec("cache: cold read", await copyFrom(s.uri, "--no-extents"), "ms");
        rec("cache: warm read", await copyFrom(s.uri, "--no-extents"), "ms");
        rec("cache: 4k random read", (await fio(s, "randread")).iops, "IOPS");
        rec("cache: write", await copyTo(s.uri), "ms"); // the final flush writes back through the delay
      },
    }],
  },
  cow: {
    title: `cow filter over memory, ${human(size)}, overlay in ${env.TMPDIR || "/var/tmp"}`,
    check: true,
    sessions: [{
      args: () => ["--filter=cow", ...memory()],
      async run(s, rec) {
        rec("cow: write", await copyTo(s.uri), "ms");
        rec("cow: overwrite", await copyTo(s.uri), "ms");
        rec("cow: 4k random write", (await fio(s, "randwrite")).iops, "IOPS");
        rec("cow: 4k random read", (await fio(s, "randread")).iops, "IOPS");
      },
    }],
  },
};

// ---- the run --------------------------------------------------------------------

const records = []; // { group, round, server, metric, value, unit }
const loads = [];
const sampleLoad = () => loads.push(Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0]));
const failures = [];

function fmtValue(unit, v) {
  if (!Number.isFinite(v)) return "—";
  if (unit === "%") return `${v.toFixed(1)} %`;
  if (unit === "ms") return `${Math.round(size / 2 ** 20 / (v / 1000))} MiB/s`;
  if (unit === "IOPS") return `${Math.round(v)} IOPS`;
  if (unit === "µs") return `${v.toFixed(2)} µs`;
  return `${v.toFixed(1)} MiB`;
}
const better = (unit) => (unit === "IOPS" ? "higher" : "lower");
/** > 1: nbdstate better. */
const ratio = (unit, kit, state) => (unit === "%" ? NaN : better(unit) === "higher" ? state / kit : kit / state);
function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

async function runGroup(name) {
  const g = GROUPS[name];
  if (g.check) {
    // filters.sh's scenarios: skip one the server under test cannot run yet.
    for (const [kind, cmd] of [["nbdkit", refCmd], ["nbdstate", dutCmd]]) {
      for (const sess of g.sessions) {
        if (!(await succeeds([...cmd, "-U", "-", ...sess.args(), "--run", "true"]))) {
          console.log(`${name}: skipped, ${kind} refuses '${sess.args().join(" ")}'`);
          return;
        }
      }
    }
  }
  console.log(`\n== ${name}: ${g.title}`);
  for (let round = 1; round <= rounds; round++) {
    // Servers alternate every round; with two sessions per server (rss)
    // their order alternates too, so the pairs run ABBA.
    const kinds = round % 2 ? ["nbdkit", "nbdstate"] : ["nbdstate", "nbdkit"];
    const plan = [];
    kinds.forEach((kind, i) => {
      const sess = i === 0 ? g.sessions : [...g.sessions].reverse();
      for (const s of sess) plan.push([kind, s]);
    });
    for (const [kind, sess] of plan) {
      sampleLoad();
      sess.before?.();
      const server = await startServer(kind, sess.args(), { tls: sess.tls });
      const second = sess.also && (await startServer(kind, sess.also(), { label: `${kind}-2` }).catch(async (e) => {
        await server.stop();
        throw e;
      }));
      try {
        await sess.run(server, (metric, value, unit) => {
          records.push({ group: name, round, server: kind, metric, value, unit });
          console.log(`  round ${round}  ${kind.padEnd(8)}  ${metric.padEnd(40)} ${fmtValue(unit, value)}`);
        }, second);
      } finally {
        await server.stop();
        await second?.stop();
        sess.after?.();
      }
    }
  }
  sampleLoad();
}

function summarize() {
  const rows = []; // { group, metric, unit, kit, state (values by round), ratio, perRound }
  for (const group of only) {
    const mine = records.filter((r) => r.group === group);
    for (const metric of [...new Set(mine.map((r) => r.metric))]) {
      const get = (server) => mine.filter((r) => r.metric === metric && r.server === server).sort((a, b) => a.round - b.round);
      const kit = get("nbdkit"), state = get("nbdstate");
      const unit = kit[0]?.unit ?? state[0].unit;
      const per = kit.map((k) => {
        const s = state.find((x) => x.round === k.round);
        return s ? ratio(unit, k.value, s.value) : NaN;
      });
      rows.push({
        group, metric, unit,
        kit: kit.map((r) => r.value), state: state.map((r) => r.value),
        ratio: ratio(unit, median(kit.map((r) => r.value)), median(state.map((r) => r.value))),
        perRound: per,
        cost: unit === "%", // a cost has no ratio: both servers' figures per round instead
      });
    }
  }
  return rows;
}

function report(rows) {
  const fix = (x, digits, suffix = "") => (Number.isFinite(x) ? x.toFixed(digits) + suffix : "—");
  const cell = (row, xs) => (xs.length ? fmtValue(row.unit, median(xs)) : "—");
  const each = (row, xs) => xs.map((x) => fmtValue(row.unit, x).split(" ")[0]).join(" ");
  const ratios = (row) => row.perRound.map((x) => fix(x, 2)).join(" ");
  console.log(`\nper-round figures (${rounds} rounds; copies in MiB/s, fio in IOPS, CPU in µs per request, memory in MiB, costs in %):`);
  for (const r of rows) {
    console.log(`  ${r.metric.padEnd(40)} nbdkit ${each(r, r.kit).padEnd(24)} nbdstate ${each(r, r.state).padEnd(24)}` +
      (r.cost ? "" : ` ratios ${ratios(r)}`));
  }
  const lmin = Math.min(...loads), lmax = Math.max(...loads);
  console.log(`\nsummary: medians of ${rounds} rounds; ratio > 1 means nbdstate is better (faster, or less memory)`);
  console.log(`(${new Date().toISOString().slice(0, 10)}, ${cpus().length} CPUs, load average ${lmin.toFixed(1)}-${lmax.toFixed(1)} during the run, ` +
    `${human(size)} copies, fio ${fioRuntime} s; ${versions})\n`);
  console.log("| figure | nbdkit | nbdstate | ratio | per round |");
  console.log("|--------|-------:|---------:|------:|-----------|");
  for (const r of rows) {
    const last = r.cost ? `nbdkit ${each(r, r.kit)}; nbdstate ${each(r, r.state)} (%)` : ratios(r);
    console.log(`| ${r.metric} | ${cell(r, r.kit)} | ${cell(r, r.state)} | ${r.cost ? "" : fix(r.ratio, 2)} | ${last} |`);
  }
}

let versions = "";
async function main() {
  for (const tool of ["nbdcopy", "nbdinfo", "fio"]) {
    if (!(await succeeds(["sh", "-c", `command -v ${tool}`]))) die(`${tool} not found (apt-get install libnbd-bin fio)`);
  }
  if (dutCmd.join(" ") === `${repo}/bin/nbdstate.js` && !existsSync(join(repo, "dist/cli/main.js"))) {
    die("nbdstate is not built: run 'npm run build' first (or set BENCH_NBDSTATE_CMD)");
  }
  if (only.includes("tls") && !(await succeeds(["sh", "-c", "command -v psktool"]))) die("psktool not found (apt-get install gnutls-bin)");
  if (only.includes("rss") && !(await succeeds(["/usr/bin/python3", "-c", "import nbd"]))) die("python3-libnbd not found (apt-get install python3-libnbd)");
  clockTicks = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" })) || 100;
  if (rounds < 3) console.log(`note: ${rounds} round(s): medians of fewer than 3 rounds say little`);

  work = mkdtempSync(join(tmpBase, "nbdstate-bench."));
  const version = async (cmd) => {
    const f = join(work, "version");
    await run(["sh", "-c", `${cmd.join(" ")} --version | head -1 > ${f}`]).catch(() => {});
    return existsSync(f) ? readFileSync(f, "utf8").trim() : "?";
  };
  versions = `${await version(refCmd)} vs ${await version(dutCmd)}`;
  console.log(`nbdstate benchmark, ${cpus().length} CPUs, load ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}`);
  console.log(`  nbdkit:   ${refCmd.join(" ")}  (${versions.split(" vs ")[0]})`);
  console.log(`  nbdstate: ${dutCmd.join(" ")}  (${versions.split(" vs ")[1]})`);
  console.log(`  groups ${only.join(",")}; ${rounds} rounds, size ${human(size)}, fio ${fioRuntime} s, ${idleConns} idle connections, tmp ${work}`);

  src = join(work, "random.img");
  console.log(`preparing ${human(size)} of random data ...`);
  await run(["sh", "-c", `head -c ${size} /dev/urandom > ${src}`]);
  if (only.includes("tls")) {
    psk = join(work, "keys.psk");
    await run(["psktool", "-u", "alice", "-p", psk]);
  }

  for (const g of only) {
    try {
      await runGroup(g);
    } catch (e) {
      failures.push(g);
      console.log(`group ${g} failed: ${e.message}`);
    }
  }
  if (out) {
    writeFileSync(out, "group\tround\tserver\tmetric\tvalue\tunit\n" +
      records.map((r) => [r.group, r.round, r.server, r.metric, Number(r.value.toFixed(3)), r.unit].join("\t")).join("\n") + "\n");
  }
  if (records.length) report(summarize());
  if (failures.length) {
    console.log(`\nfailed groups: ${failures.join(", ")}`);
    process.exitCode = 1;
  }
}

async function cleanup() {
  for (const child of live) child.kill("SIGTERM");
  if (work) rmSync(work, { recursive: true, force: true });
}
process.on("SIGINT", () => cleanup().then(() => process.exit(130)));
process.on("SIGTERM", () => cleanup().then(() => process.exit(143)));
main().then(cleanup, async (e) => { console.error(e); await cleanup(); process.exit(1); });
