#!/usr/bin/env bash
# Side-by-side benchmark: nbdkit's memory plugin vs nbdstate's, each on a
# private unix socket, alternating servers within one run (noise between
# runs on these machines is ~15%: compare only inside one run).
#
# Per round and per server (a fresh server each time, only one running):
#   copy-write  nbdcopy of a random-data file of BENCH_COPY_SIZE into the server
#   copy-read   nbdcopy of the whole export from the server to null:
#   randread    fio --ioengine=nbd, 4k random reads, iodepth 32, BENCH_FIO_RUNTIME s
#   randwrite   fio --ioengine=nbd, 4k random writes, iodepth 32, BENCH_FIO_RUNTIME s
# then prints each figure, the per-server medians, and the ratio
# nbdstate/nbdkit, oriented so that > 1 always means nbdstate is faster
# (IOPS: nbdstate/nbdkit; times: nbdkit/nbdstate).
#
# Environment (defaults in brackets):
#   BENCH_ROUNDS        rounds [3]
#   BENCH_COPY_SIZE     bytes copied and export size, K/M/G suffixes [1G]
#   BENCH_FIO_RUNTIME   seconds per fio job [10]
#   BENCH_TMP           where the random source file goes [/dev/shm, else /tmp]
#   BENCH_NBDKIT_CMD    reference server command [nbdkit]
#   BENCH_NBDSTATE_CMD  server under test [node <repo>/bin/nbdstate.js]
#                       (BENCH_NBDSTATE_CMD=nbdkit compares nbdkit with itself)
#   BENCH_OUT           also write the raw figures (TSV) to this file
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"

rounds="${BENCH_ROUNDS:-3}"
copy_size_h="${BENCH_COPY_SIZE:-1G}"
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

copy_bytes="$(numfmt --from=iec "${copy_size_h^^}")" || die "bad BENCH_COPY_SIZE: $copy_size_h"
tmp_base="${BENCH_TMP:-}"
if [[ -z "$tmp_base" ]]; then
  if [[ -d /dev/shm && -w /dev/shm ]]; then tmp_base=/dev/shm; else tmp_base=/tmp; fi
fi
work="$(mktemp -d "$tmp_base/nbdstate-bench.XXXXXX")"
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

# start_server LABEL CMD -> sets server_pid and uri
start_server() {
  local label="$1" cmd="$2"
  local sock="$work/$label.sock"
  rm -f "$sock"
  # shellcheck disable=SC2086 # CMD is a command line
  $cmd -f -U "$sock" memory "size=$copy_bytes" >"$work/$label.log" 2>&1 &
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

record() { # round label metric value unit
  printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$results"
}

# fio_iops RW -> prints IOPS
fio_iops() {
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

report_copy() { # label metric ms
  awk -v l="$1" -v m="$2" -v ms="$3" -v b="$copy_bytes" \
    'BEGIN { s = ms / 1000; if (s <= 0) s = 0.001; printf "  %-9s %-10s %7.3f s  (%6.0f MiB/s)\n", l, m, s, b / 1048576 / s }'
}

bench_one() { # round label cmd
  local round="$1" label="$2" cmd="$3" t0 t1 ms iops
  start_server "$label" "$cmd"

  t0=$(now_ns)
  nbdcopy "$src" "$uri"
  t1=$(now_ns)
  ms=$(((t1 - t0) / 1000000))
  record "$round" "$label" copy-write "$ms" ms
  report_copy "$label" copy-write "$ms"

  t0=$(now_ns)
  nbdcopy "$uri" null:
  t1=$(now_ns)
  ms=$(((t1 - t0) / 1000000))
  record "$round" "$label" copy-read "$ms" ms
  report_copy "$label" copy-read "$ms"

  iops=$(fio_iops randread)
  record "$round" "$label" randread "$iops" iops
  printf '  %-9s randread   %7d IOPS (4k, QD32, %ss)\n' "$label" "$iops" "$fio_runtime"

  iops=$(fio_iops randwrite)
  record "$round" "$label" randwrite "$iops" iops
  printf '  %-9s randwrite  %7d IOPS (4k, QD32, %ss)\n' "$label" "$iops" "$fio_runtime"

  stop_server
}

echo "nbdstate benchmark: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "  nbdkit:   $ref_cmd   ($($ref_cmd --version 2>/dev/null | head -1 || echo '?'))"
echo "  nbdstate: $dut_cmd   ($($dut_cmd --version 2>/dev/null | head -1 || echo '?'))"
echo "  memory plugin size=$copy_bytes, $rounds rounds, fio runtime ${fio_runtime}s, tmp $work"

src="$work/random.img"
echo "preparing $copy_size_h of random data in $src ..."
head -c "$copy_bytes" /dev/urandom >"$src"

: >"$results"
for ((r = 1; r <= rounds; r++)); do
  echo "round $r"
  # Alternate which server goes first, so neither always runs warm or cold.
  if ((r % 2)); then
    bench_one "$r" nbdkit "$ref_cmd"
    bench_one "$r" nbdstate "$dut_cmd"
  else
    bench_one "$r" nbdstate "$dut_cmd"
    bench_one "$r" nbdkit "$ref_cmd"
  fi
done

[[ -n "${BENCH_OUT:-}" ]] && cp "$results" "$BENCH_OUT"

echo
node -e '
  const rows = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map((l) => l.split("\t"));
  const metrics = ["copy-write", "copy-read", "randread", "randwrite"];
  const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
  const get = (label, metric) => rows.filter((r) => r[1] === label && r[2] === metric).map((r) => Number(r[3]));
  const fmt = (metric, v) => metric.startsWith("copy") ? (v / 1000).toFixed(3) + " s" : Math.round(v) + " IOPS";
  console.log("summary (medians of " + process.argv[2] + " rounds; ratio > 1 means nbdstate is faster)");
  console.log("  metric      nbdkit          nbdstate        ratio");
  for (const m of metrics) {
    const a = median(get("nbdkit", m)), b = median(get("nbdstate", m));
    const ratio = m.startsWith("copy") ? a / b : b / a; // times: inverted
    console.log("  " + m.padEnd(11) + " " + fmt(m, a).padEnd(15) + " " + fmt(m, b).padEnd(15) + " " + ratio.toFixed(2));
  }
  const per = metrics.map((m) => { const a = get("nbdkit", m), b = get("nbdstate", m); return m + ": " + a.map((x, i) => (m.startsWith("copy") ? x / b[i] : b[i] / x).toFixed(2)).join(" "); });
  console.log("  per-round ratios: " + per.join("; "));
' "$results" "$rounds"
