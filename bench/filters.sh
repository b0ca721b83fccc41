#!/usr/bin/env bash
# Filter benchmarks: nbdkit vs nbdstate with the same command line, each on
# a private unix socket, alternating servers within one run (as run.sh:
# compare only inside one run).
#
# Scenarios (BENCH_FILTERS, default "cache cow"):
#
#   cache  --filter=cache --filter=delay memory SIZE cache-on-read=true
#          delay-read=D delay-write=D: a cache over a slow plugin.
#            cold-read   nbdcopy --no-extents of the whole export to null: (every block
#                        from the slow layer, kept in the cache)
#            warm-read   the same again (every block from the cache)
#            randread    fio 4k random reads, QD32 (cached)
#            copy-write  nbdcopy of random data into it (cached; the final
#                        flush writes it all back through the delay)
#          Needs a delay filter on both sides: nbdkit has one; when the
#          server under test has none, this scenario is skipped.
#
#   cow    --filter=cow memory SIZE: writes into the overlay.
#            copy-write  nbdcopy of random data (fills the overlay)
#            overwrite   the same again (blocks already in the overlay)
#            randwrite   fio 4k random writes, QD32 (read-modify-write of
#                        parts of 64K overlay blocks)
#            randread    fio 4k random reads, QD32
#
# Then the medians per server and the ratio, oriented so that > 1 always
# means nbdstate is faster (IOPS: nbdstate/nbdkit; times: nbdkit/nbdstate).
#
# Environment (defaults in brackets):
#   BENCH_FILTERS       scenarios to run ["cache cow"]
#   BENCH_ROUNDS        rounds [3]
#   BENCH_SIZE          export size and bytes copied, K/M/G suffixes [256M]
#   BENCH_DELAY         delay per read/write request of the slow layer [2ms]
#   BENCH_FIO_RUNTIME   seconds per fio job [10]
#   BENCH_TMP           where the random source file goes [/dev/shm, else /tmp]
#   BENCH_NBDKIT_CMD    reference server command [nbdkit]
#   BENCH_NBDSTATE_CMD  server under test [node <repo>/bin/nbdstate.js]
#                       (BENCH_NBDSTATE_CMD=nbdkit compares nbdkit with itself)
#   BENCH_OUT           also write the raw figures (TSV) to this file
#
# The overlay and cache files go to $TMPDIR (default /var/tmp) on both sides.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"

scenarios="${BENCH_FILTERS:-cache cow}"
rounds="${BENCH_ROUNDS:-3}"
size_h="${BENCH_SIZE:-256M}"
delay="${BENCH_DELAY:-2ms}"
fio_runtime="${BENCH_FIO_RUNTIME:-10}"
ref_cmd="${BENCH_NBDKIT_CMD:-nbdkit}"
dut_cmd="${BENCH_NBDSTATE_CMD:-node $repo/bin/nbdstate.js}"

die() { echo "bench: $*" >&2; exit 1; }

for tool in nbdcopy nbdinfo fio numfmt; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install libnbd-bin fio coreutils)"
done
fio --enghelp 2>/dev/null | grep -qw nbd || die "this fio has no nbd ioengine (fio --enghelp)"
if [[ "$dut_cmd" == "node $repo/bin/nbdstate.js" && ! -e "$repo/dist/cli/main.js" ]]; then
  die "nbdstate is not built: run 'npm run build' first (or set BENCH_NBDSTATE_CMD)"
fi

size="$(numfmt --from=iec "${size_h^^}")" || die "bad BENCH_SIZE: $size_h"
tmp_base="${BENCH_TMP:-}"
if [[ -z "$tmp_base" ]]; then
  if [[ -d /dev/shm && -w /dev/shm ]]; then tmp_base=/dev/shm; else tmp_base=/tmp; fi
fi
work="$(mktemp -d "$tmp_base/nbdstate-bench-filters.XXXXXX")"
results="$work/results.tsv"
server_pid=""

cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ns() { date +%s%N; }

# The command line of a scenario (after the server command and -f -U SOCK).
scenario_args() {
  case "$1" in
    cache) echo "--filter=cache --filter=delay memory size=$size cache-on-read=true delay-read=$delay delay-write=$delay" ;;
    cow) echo "--filter=cow memory size=$size" ;;
    *) die "unknown scenario '$1' (cache, cow)" ;;
  esac
}

# start_server LABEL CMD ARGS -> sets server_pid and uri
start_server() {
  local label="$1" cmd="$2" args="$3"
  local sock="$work/$label.sock"
  rm -f "$sock"
  # shellcheck disable=SC2086 # CMD and ARGS are command lines
  $cmd -f -U "$sock" $args >"$work/$label.log" 2>&1 &
  server_pid=$!
  uri="nbd+unix:///?socket=$sock"
  local i
  for ((i = 0; i < 400; i++)); do
    if [[ -S "$sock" ]] && nbdinfo --size "$uri" >/dev/null 2>&1; then return 0; fi
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/$label.log" >&2; die "$label exited before listening"; }
    sleep 0.05
  done
  cat "$work/$label.log" >&2
  die "$label did not listen on $sock within 20 s"
}

stop_server() {
  kill -TERM "$server_pid" 2>/dev/null || true
  local i
  for ((i = 0; i < 100; i++)); do
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

record() { # scenario round label metric value unit
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$results"
}

# Whether a server command accepts a scenario's command line at all.
supports() { # cmd args
  # shellcheck disable=SC2086
  $1 -U - $2 --run true >/dev/null 2>&1
}

fio_iops() { # RW -> IOPS
  local rw="$1" out="$work/fio-$1.json"
  fio --name="$rw" --ioengine=nbd --uri="$uri" --rw="$rw" --bs=4k --iodepth=32 \
    --runtime="$fio_runtime" --time_based --norandommap --randrepeat=0 \
    --output-format=json --output="$out" >/dev/null 2>"$work/fio.err" \
    || { cat "$work/fio.err" >&2; die "fio $rw failed"; }
  node -e '
    const j = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const job = j.jobs[0];
    const side = process.argv[2] === "randread" ? job.read : job.write;
    if (job.error) { console.error("fio job error", job.error); process.exit(1); }
    process.stdout.write(String(Math.round(side.iops)));
  ' "$out" "$rw"
}

timed() { # scenario round label metric COMMAND... : runs it, records ms
  local sc="$1" round="$2" label="$3" metric="$4" t0 t1 ms
  shift 4
  t0=$(now_ns)
  "$@" >/dev/null
  t1=$(now_ns)
  ms=$(((t1 - t0) / 1000000))
  record "$sc" "$round" "$label" "$metric" "$ms" ms
  awk -v l="$label" -v m="$metric" -v ms="$ms" -v b="$size" \
    'BEGIN { s = ms / 1000; if (s <= 0) s = 0.001; printf "  %-9s %-11s %8.3f s  (%6.0f MiB/s)\n", l, m, s, b / 1048576 / s }'
}

iops() { # scenario round label metric(randread|randwrite)
  local v
  v=$(fio_iops "$4")
  record "$1" "$2" "$3" "$4" "$v" iops
  printf '  %-9s %-11s %8d IOPS (4k, QD32, %ss)\n' "$3" "$4" "$v" "$fio_runtime"
}

bench_one() { # scenario round label cmd
  local sc="$1" round="$2" label="$3" cmd="$4"
  start_server "$label" "$cmd" "$(scenario_args "$sc")"
  case "$sc" in
    cache)
      # --no-extents: the memory plugin's holes must be read too, through the delay.
      timed "$sc" "$round" "$label" cold-read nbdcopy --no-extents "$uri" null:
      timed "$sc" "$round" "$label" warm-read nbdcopy --no-extents "$uri" null:
      iops "$sc" "$round" "$label" randread
      timed "$sc" "$round" "$label" copy-write nbdcopy "$src" "$uri"
      ;;
    cow)
      timed "$sc" "$round" "$label" copy-write nbdcopy "$src" "$uri"
      timed "$sc" "$round" "$label" overwrite nbdcopy "$src" "$uri"
      iops "$sc" "$round" "$label" randwrite
      iops "$sc" "$round" "$label" randread
      ;;
  esac
  stop_server
}

echo "nbdstate filter benchmark: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "  nbdkit:   $ref_cmd   ($($ref_cmd --version 2>/dev/null | head -1 || echo '?'))"
echo "  nbdstate: $dut_cmd   ($($dut_cmd --version 2>/dev/null | head -1 || echo '?'))"
echo "  scenarios: $scenarios; size=$size, delay=$delay, $rounds rounds, fio runtime ${fio_runtime}s, tmp $work"

src="$work/random.img"
echo "preparing $size_h of random data in $src ..."
head -c "$size" /dev/urandom >"$src"

: >"$results"
ran=""
for sc in $scenarios; do
  args="$(scenario_args "$sc")"
  supports "$ref_cmd" "$args" || die "the reference server refuses: $ref_cmd $args"
  if ! supports "$dut_cmd" "$args"; then
    echo "scenario $sc: skipped, the server under test refuses '$args' (no delay filter yet?)"
    continue
  fi
  ran="$ran $sc"
  for ((r = 1; r <= rounds; r++)); do
    echo "$sc, round $r"
    # Alternate which server goes first, so neither always runs warm or cold.
    if ((r % 2)); then
      bench_one "$sc" "$r" nbdkit "$ref_cmd"
      bench_one "$sc" "$r" nbdstate "$dut_cmd"
    else
      bench_one "$sc" "$r" nbdstate "$dut_cmd"
      bench_one "$sc" "$r" nbdkit "$ref_cmd"
    fi
  done
done

[[ -n "${BENCH_OUT:-}" ]] && cp "$results" "$BENCH_OUT"
[[ -n "$ran" ]] || exit 0

echo
node -e '
  const rows = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map((l) => l.split("\t"));
  const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
  const get = (sc, label, metric) => rows.filter((r) => r[0] === sc && r[2] === label && r[3] === metric).map((r) => Number(r[4]));
  const isTime = (sc, metric) => rows.find((r) => r[0] === sc && r[3] === metric)[5] === "ms";
  console.log("summary (medians of " + process.argv[2] + " rounds; ratio > 1 means nbdstate is faster)");
  console.log("  scenario metric       nbdkit          nbdstate        ratio   per round");
  for (const sc of [...new Set(rows.map((r) => r[0]))]) {
    for (const m of [...new Set(rows.filter((r) => r[0] === sc).map((r) => r[3]))]) {
      const t = isTime(sc, m);
      const fmt = (v) => (t ? (v / 1000).toFixed(3) + " s" : Math.round(v) + " IOPS");
      const A = get(sc, "nbdkit", m), B = get(sc, "nbdstate", m);
      const ratio = (x, y) => (t ? x / y : y / x);
      const per = A.map((x, i) => ratio(x, B[i]).toFixed(2)).join(" ");
      console.log("  " + sc.padEnd(8) + " " + m.padEnd(12) + " " + fmt(median(A)).padEnd(15) + " " + fmt(median(B)).padEnd(15) + " " +
        ratio(median(A), median(B)).toFixed(2).padEnd(7) + " " + per);
    }
  }
' "$results" "$rounds"
