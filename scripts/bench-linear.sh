#!/usr/bin/env bash
# Whether a fetch costs the same per GiB at every size: whole 'blockcat get'
# processes into host memory of a 256 MiB, a 1 GiB and a 4 GiB volume, in
# interleaved rounds against one blockd. Prints per-round figures, the
# medians of wall seconds and client and server CPU seconds, and the median
# seconds per GiB of each size with its ratio to the largest: of the whole
# process (wall), and of the fetch alone as the get reports it (--json
# "seconds": from the first request to the last byte, without process
# start, dial and buffer set-up). Needs about 5.3 GiB free under $TMPDIR
# for the volumes (removed on exit).
#
#   ./scripts/bench-linear.sh                 # host memory, 3 rounds
#   ROUNDS=5 ARGS="--provider example" ./scripts/bench-linear.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
ARGS=${ARGS:-}
SIZE=unused
VOLUMES="v256m:256MiB v1g:1GiB v4g:4GiB"
work=$(mktemp -d -t blockxfer-bench-linear.XXXXXX)
. scripts/lib/bench.sh
bench_serve example

labels="v256m v1g v4g"
echo "# 256 MiB, 1 GiB and 4 GiB volumes, $ROUNDS interleaved rounds: label wall_s client_cpu_s server_cpu_s"
: >"$work/results"
for i in $(seq "$ROUNDS"); do
	for v in $labels; do
		VOLUME=$v OUT=$work/json bench_get "$v" "" --json $ARGS | tee -a "$work/results"
		# The fetch alone, as a line of the same shape.
		awk -v l="$v-fetch" -F'[:,]' '$1 ~ /"seconds"/ {printf "%s %s 0 0\n", l, $2 + 0}' "$work/json" >>"$work/results"
	done
done
bench_medians $labels v256m-fetch v1g-fetch v4g-fetch | tee "$work/medians"
echo "# seconds per GiB: label s_per_GiB ratio_to_4GiB"
awk '$1 == "#" {next}
	{l = $1; b = l; sub(/-fetch$/, "", b); g = b == "v256m" ? 0.25 : b == "v1g" ? 1 : 4
	s[l] = $2 / g; order[++n] = l}
	END {for (i = 1; i <= n; i++) {l = order[i]; ref = l ~ /-fetch$/ ? "v4g-fetch" : "v4g"
		printf "%s %.3f %.2f\n", l, s[l], s[l] / s[ref]}}' "$work/medians"
