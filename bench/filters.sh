#!/usr/bin/env bash
# Filter scenarios, nbdkit vs nbdstate: the cache and cow groups of
# bench/bench.mjs (see bench/README.md), with this script's own knobs:
#   BENCH_FILTERS   scenarios ["cache cow"]
#   BENCH_SIZE      export size and bytes copied [256M]
#   BENCH_DELAY     delay per request of the slow layer (cache) [2ms]
# and bench.mjs's: BENCH_ROUNDS, BENCH_FIO_RUNTIME, BENCH_TMP, BENCH_OUT,
# BENCH_NBDKIT_CMD, BENCH_NBDSTATE_CMD. Overlays and caches go to $TMPDIR
# (default /var/tmp) on both sides.
set -euo pipefail
scenarios="${BENCH_FILTERS:-cache cow}"
BENCH_ONLY="$(echo $scenarios | tr ' ' ',')" BENCH_COPY_SIZE="${BENCH_SIZE:-256M}" \
  exec node "$(dirname "$0")/bench.mjs" "$@"
