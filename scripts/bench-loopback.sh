#!/usr/bin/env bash
# Loopback throughput: a raw single-stream TCP copy (iperf3, and the Go raw
# baseline inside BenchmarkFetch) beside engine fetches of a 1 GiB volume
# with 1, 2, 4 and 8 data connections, all in one run. Needs iperf3
# (apt-get install iperf3). Figures go in docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_IPERF=${SECONDS_IPERF:-5}
if command -v iperf3 >/dev/null; then
	iperf3 -s -1 -p 5299 >/dev/null &
	srv=$!
	trap 'kill $srv 2>/dev/null || true' EXIT
	# iperf3 has no readiness signal; its client retries the connect.
	sleep 0.5
	echo "== iperf3 -c 127.0.0.1 -t $SECONDS_IPERF (single stream)"
	iperf3 -c 127.0.0.1 -p 5299 -t "$SECONDS_IPERF" -f m | grep -E 'receiver'
else
	echo "iperf3 not installed: skipping the iperf3 baseline (apt-get install iperf3)"
fi
echo "== go test -bench BenchmarkFetch (1 GiB volume)"
go test -run '^$' -bench 'BenchmarkFetch$' -benchtime 5x ./engine/ | grep -E '^Benchmark'
echo "== go test -bench BenchmarkFetchPaths (256 MiB, tcp vs devmem-emulated)"
go test -run '^$' -bench 'BenchmarkFetchPaths' -benchtime 4x ./transport/choose/ | grep -E '^Benchmark'
