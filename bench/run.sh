#!/usr/bin/env bash
# The benchmark is bench/bench.mjs (npm run bench); this name is kept for
# scripts and habits that run `bash bench/run.sh`. Knobs: bench/README.md.
exec node "$(dirname "$0")/bench.mjs" "$@"
