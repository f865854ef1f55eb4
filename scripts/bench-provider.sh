#!/usr/bin/env bash
# What the plugin boundary costs a whole fetch: a volume fetched into the
# built-in host provider and into the example plugin (whose data calls go
# over the shared-memory ring), and into the example plugin with the ring
# turned off (every call a gRPC round trip), in interleaved rounds against
# one blockd. Prints per-round figures and the medians of wall seconds and
# client (blockcat + plugin) and server CPU seconds.
#
#   ./scripts/bench-provider.sh            # 1 GiB, 5 rounds
#   SIZE=256MiB ROUNDS=3 ./scripts/bench-provider.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-1GiB}
ROUNDS=${ROUNDS:-5}
work=$(mktemp -d -t blockxfer-bench-provider.XXXXXX)
. scripts/lib/bench.sh
bench_serve example

labels="host example-ring example-grpc"
echo "# $SIZE volume, $ROUNDS interleaved rounds: label wall_s client_cpu_s server_cpu_s"
: >"$work/results"
for i in $(seq "$ROUNDS"); do
	bench_get host "" --provider host | tee -a "$work/results"
	bench_get example-ring "" --provider example | tee -a "$work/results"
	bench_get example-grpc "BLOCKXFER_PROVIDER_RING=off" --provider example | tee -a "$work/results"
done
bench_medians $labels
