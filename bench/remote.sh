#!/usr/bin/env bash
# Remote disks benchmark: nbdcopy read throughput (URI -> null:) through
#   curl-nginx   nbdkit's curl plugin vs nbdstate's, reading a file from
#                Debian's nginx on a loopback port (own config, temp dir)
#   s3-object    nbdkit's curl plugin reading the object's URL on s3rver
#                vs nbdstate's S3 plugin reading the same object (key=)
#   s3-blocks    nbdstate's S3 plugin with size= object-size= (the same
#                data stored as objects), against the same nbdkit figure
# Both HTTP servers run for the whole benchmark; the NBD servers alternate,
# one at a time, a fresh one per measurement, the order flipping every
# round. Each server first reads the disk once untimed (BENCH_WARMUP=0 to
# skip): the figures are steady-state throughput, not Node's JIT warm-up
# or connection set-up. Figures: MiB/s per measurement, then medians and the ratio
# nbdstate/nbdkit (> 1 means nbdstate is faster). Compare inside one run
# only: noise between runs on these machines is ~15%.
#
# Environment (defaults in brackets):
#   BENCH_ROUNDS         rounds [3]
#   BENCH_SIZE           disk size, K/M/G suffixes [256M]
#   BENCH_OBJECT_SIZE    object-size for s3-blocks [1M]
#   BENCH_NBDCOPY_ARGS   extra nbdcopy arguments [] (e.g. --connections=1)
#   BENCH_WARMUP         read once untimed before each timed read [1]
#   BENCH_TMP            where the data goes [/dev/shm, else /tmp]
#   BENCH_NBDKIT_CMD     reference server [nbdkit]
#   BENCH_NBDSTATE_CMD   server under test [<repo>/bin/nbdstate.js]
#   BENCH_OUT            also write the raw figures (TSV) to this file
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
rounds="${BENCH_ROUNDS:-3}"
size_h="${BENCH_SIZE:-256M}"
objsize_h="${BENCH_OBJECT_SIZE:-1M}"
ref_cmd="${BENCH_NBDKIT_CMD:-nbdkit}"
dut_cmd="${BENCH_NBDSTATE_CMD:-$repo/bin/nbdstate.js}"
# shellcheck disable=SC2206
copy_args=(${BENCH_NBDCOPY_ARGS:-})

die() { echo "bench: $*" >&2; exit 1; }
for tool in nbdcopy nbdinfo nginx numfmt; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install libnbd-bin nginx coreutils)"
done
[[ -e "$repo/node_modules/s3rver/bin/s3rver.js" ]] || die "s3rver is not installed: run npm install"
if [[ "$dut_cmd" == "$repo/bin/nbdstate.js" && ! -e "$repo/dist/cli/main.js" ]]; then
  die "nbdstate is not built: run 'npm run build' first"
fi
$ref_cmd --dump-plugin curl >/dev/null 2>&1 || die "$ref_cmd has no curl plugin (apt-get install nbdkit)"

bytes="$(numfmt --from=iec "${size_h^^}")" || die "bad BENCH_SIZE: $size_h"
objbytes="$(numfmt --from=iec "${objsize_h^^}")" || die "bad BENCH_OBJECT_SIZE: $objsize_h"
((bytes % objbytes == 0)) || die "BENCH_SIZE must be a multiple of BENCH_OBJECT_SIZE"
tmp_base="${BENCH_TMP:-}"
if [[ -z "$tmp_base" ]]; then
  if [[ -d /dev/shm && -w /dev/shm ]]; then tmp_base=/dev/shm; else tmp_base=/tmp; fi
fi
work="$(mktemp -d "$tmp_base/nbdstate-remote-bench.XXXXXX")"
results="$work/results.tsv"
server_pid="" nginx_pid="" s3_pid=""

cleanup() {
  for pid in "$server_pid" "$nginx_pid" "$s3_pid"; do
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
wait_port() { # port what
  local i
  for ((i = 0; i < 200; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  die "$2 did not listen on port $1"
}
now_ns() { date +%s%N; }

echo "preparing $size_h of random data ..."
mkdir -p "$work/www" "$work/tmp" "$work/s3"
head -c "$bytes" /dev/urandom >"$work/www/disk.img"

# nginx: its own config, loopback only.
nginx_port="$(free_port)"
user_line=""
[[ "$(id -u)" == 0 ]] && user_line="user root root;"
cat >"$work/nginx.conf" <<EOF
$user_line
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 512; }
http {
  access_log off;
  client_body_temp_path $work/tmp/body; proxy_temp_path $work/tmp/proxy;
  fastcgi_temp_path $work/tmp/fastcgi; uwsgi_temp_path $work/tmp/uwsgi; scgi_temp_path $work/tmp/scgi;
  default_type application/octet-stream;
  sendfile on;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$nginx_port; root $work/www; }
}
EOF
nginx -p "$work" -c "$work/nginx.conf" 2>"$work/nginx.stderr" &
nginx_pid=$!
wait_port "$nginx_port" nginx
http_url="http://127.0.0.1:$nginx_port/disk.img"

# s3rver: a separate process, objects in $work/s3.
s3_port="$(free_port)"
node "$repo/node_modules/s3rver/bin/s3rver.js" -d "$work/s3" -a 127.0.0.1 -p "$s3_port" -s --configure-bucket bench >"$work/s3rver.log" 2>&1 &
s3_pid=$!
wait_port "$s3_port" s3rver
endpoint="http://127.0.0.1:$s3_port"
s3_args=(endpoint-url="$endpoint" bucket=bench access-key=S3RVER secret-key=S3RVER)

# start_server LABEL CMD ARGS... -> server_pid, uri
start_server() {
  local label="$1" cmd="$2"
  shift 2
  local sock="$work/$label.sock"
  rm -f "$sock"
  # shellcheck disable=SC2086 # CMD is a command line
  $cmd -f -r -U "$sock" "$@" >"$work/$label.log" 2>&1 &
  server_pid=$!
  uri="nbd+unix:///?socket=$sock"
  local i
  for ((i = 0; i < 400; i++)); do
    if [[ -S "$sock" ]] && nbdinfo --size "$uri" >/dev/null 2>&1; then return 0; fi
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/$label.log" >&2; die "$label exited before listening"; }
    sleep 0.05
  done
  cat "$work/$label.log" >&2
  die "$label did not answer within 20 s"
}
stop_server() {
  kill -TERM "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

echo "uploading to s3rver: one object, and $((bytes / objbytes)) objects of $objsize_h ..."
(cd "$repo" && node --input-type=module -e '
  import { S3Client, PutObjectCommand } from "@aws-sdk/client-s3";
  import { readFileSync } from "node:fs";
  const c = new S3Client({ endpoint: process.argv[1], region: "us-east-1", forcePathStyle: true,
    credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" }, requestChecksumCalculation: "WHEN_REQUIRED" });
  await c.send(new PutObjectCommand({ Bucket: "bench", Key: "disk.img", Body: readFileSync(process.argv[2]) }));
' "$endpoint" "$work/www/disk.img") 2>/dev/null || die "upload to s3rver failed"
# The block layout is written by nbdstate's S3 plugin itself.
sock="$work/fill.sock"
$dut_cmd -f -U "$sock" S3 "${s3_args[@]}" key=blocks size="$bytes" object-size="$objbytes" >"$work/fill.log" 2>&1 &
server_pid=$!
for ((i = 0; i < 400; i++)); do [[ -S "$sock" ]] && break; sleep 0.05; done
nbdcopy "$work/www/disk.img" "nbd+unix:///?socket=$sock" || { cat "$work/fill.log" >&2; die "filling the block layout failed"; }
stop_server

record() { printf '%s\t%s\t%s\t%s\n' "$@" >>"$results"; } # round case server ms

measure() { # round case server cmd args...
  local round="$1" case="$2" label="$3" cmd="$4" t0 t1 ms
  shift 4
  start_server "$case-$label" "$cmd" "$@"
  if [[ "${BENCH_WARMUP:-1}" != 0 ]]; then
    nbdcopy "${copy_args[@]}" "$uri" null: || { cat "$work/$case-$label.log" >&2; die "nbdcopy from $case-$label failed"; }
  fi
  t0=$(now_ns)
  nbdcopy "${copy_args[@]}" "$uri" null: || { cat "$work/$case-$label.log" >&2; die "nbdcopy from $case-$label failed"; }
  t1=$(now_ns)
  stop_server
  ms=$(((t1 - t0) / 1000000))
  ((ms > 0)) || ms=1
  record "$round" "$case" "$label" "$ms"
  awk -v c="$case" -v l="$label" -v ms="$ms" -v b="$bytes" \
    'BEGIN { printf "  %-11s %-9s %7.3f s  %7.1f MiB/s\n", c, l, ms / 1000, b / 1048576 / (ms / 1000) }'
}

echo "nbdstate remote benchmark: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "  nbdkit:   $ref_cmd ($($ref_cmd --version 2>/dev/null | head -1 || echo '?'))"
echo "  nbdstate: $dut_cmd"
echo "  $size_h read with nbdcopy ${copy_args[*]:-(defaults)} URI null: (warm-up read first: ${BENCH_WARMUP:-1}), $rounds rounds; nginx $(nginx -v 2>&1 | sed 's/.*\///'), s3rver $(node -p "require('$repo/node_modules/s3rver/package.json').version")"

: >"$results"
for ((r = 1; r <= rounds; r++)); do
  echo "round $r"
  kit_nginx=(r curl-nginx nbdkit "$ref_cmd" curl "$http_url")
  dut_nginx=(r curl-nginx nbdstate "$dut_cmd" curl "$http_url")
  kit_s3=(r s3 nbdkit "$ref_cmd" curl "$endpoint/bench/disk.img")
  dut_s3=(r s3 nbdstate "$dut_cmd" S3 "${s3_args[@]}" key=disk.img)
  dut_blocks=(r s3 nbdstate-blocks "$dut_cmd" S3 "${s3_args[@]}" key=blocks size="$bytes" object-size="$objbytes")
  if ((r % 2)); then order=(kit_nginx dut_nginx kit_s3 dut_s3 dut_blocks); else order=(dut_nginx kit_nginx dut_blocks dut_s3 kit_s3); fi
  for name in "${order[@]}"; do
    declare -n m="$name"
    measure "$r" "${m[@]:1}"
    unset -n m
  done
done

[[ -n "${BENCH_OUT:-}" ]] && cp "$results" "$BENCH_OUT"

echo
node -e '
  const rows = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map((l) => l.split("\t"));
  const bytes = Number(process.argv[3]);
  const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
  const ms = (c, l) => rows.filter((r) => r[1] === c && r[2] === l).map((r) => Number(r[3]));
  const mibs = (t) => bytes / 1048576 / (t / 1000);
  console.log("summary: nbdcopy read throughput, medians of " + process.argv[2] + " rounds (ratio > 1: nbdstate is faster)");
  console.log("  case                        nbdkit          nbdstate        ratio  per round");
  const line = (name, c, ref, dut) => {
    const a = ms(c, ref), b = ms(c, dut);
    const ratio = median(a) / median(b);
    console.log("  " + name.padEnd(27) + " " + (mibs(median(a)).toFixed(1) + " MiB/s").padEnd(15) + " " + (mibs(median(b)).toFixed(1) + " MiB/s").padEnd(15) + " " +
      ratio.toFixed(2).padEnd(6) + " " + a.map((x, i) => (x / b[i]).toFixed(2)).join(" "));
  };
  line("curl plugin, nginx", "curl-nginx", "nbdkit", "nbdstate");
  line("S3 object (nbdkit: curl)", "s3", "nbdkit", "nbdstate");
  line("S3 object-size= (idem)", "s3", "nbdkit", "nbdstate-blocks");
' "$results" "$rounds" "$bytes"
