#!/usr/bin/env bash
# What the plugin boundary costs a whole fetch: a volume fetched into the
# built-in host provider; into the example plugin, host-mappable, so the
# engine receives straight into the host's mapping of its memfds; into the
# example plugin made not host-mappable (BLOCKXFER_EXAMPLE_NO_HOST_MAP=1),
# whose bytes land in staging and are copied in over the shared-memory
# ring; and the same with the ring turned off (every call a gRPC round
# trip), in interleaved rounds against one blockd. Prints per-round figures and the medians of wall seconds and
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

labels="host example-mapped example-ring example-grpc"
echo "# $SIZE volume, $ROUNDS interleaved rounds: label wall_s client_cpu_s server_cpu_s"
: >"$work/results"
for i in $(seq "$ROUNDS"); do
	bench_get host "" --provider host | tee -a "$work/results"
	bench_get example-mapped "" --provider example | tee -a "$work/results"
	bench_get example-ring "BLOCKXFER_EXAMPLE_NO_HOST_MAP=1" --provider example | tee -a "$work/results"
	bench_get example-grpc "BLOCKXFER_EXAMPLE_NO_HOST_MAP=1 BLOCKXFER_PROVIDER_RING=off" --provider example | tee -a "$work/results"
done
bench_medians $labels
