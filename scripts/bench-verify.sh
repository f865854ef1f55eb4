#!/usr/bin/env bash
# What always-on CRC checking costs: a 1 GiB volume fetched into memory by
# blockcat, with extents checked (the default) and with --no-verify, in
# interleaved rounds against one blockd. Prints per-round figures and the
# medians of wall seconds and client and server CPU seconds.
#
#   ./scripts/bench-verify.sh            # 1 GiB, 5 rounds
#   SIZE=256MiB ROUNDS=3 ./scripts/bench-verify.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-1GiB}
ROUNDS=${ROUNDS:-5}
work=$(mktemp -d -t blockxfer-bench-verify.XXXXXX)
. scripts/lib/bench.sh
bench_serve

echo "# $SIZE volume, $ROUNDS interleaved rounds: label wall_s client_cpu_s server_cpu_s"
: >"$work/results"
for i in $(seq "$ROUNDS"); do
	bench_get verify "" | tee -a "$work/results"
	bench_get no-verify "" --no-verify | tee -a "$work/results"
done
bench_medians verify no-verify
