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
pid=
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" || true; fi
	rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/bin/" ./cmd/blockd ./cmd/blockcat
export PATH="$work/bin:$PATH"
mkdir -p "$work/data"
blockd keygen -o "$work/data/blockd.key" >/dev/null
export BLOCKXFER_KEY_FILE="$work/data/blockd.key"
blockd volume create bench --size "$SIZE" --fill random --data "$work/data" >/dev/null
mkfifo "$work/ready"
exec 3<>"$work/ready"
blockd serve --data "$work/data" --listen 127.0.0.1:0 --ready-file "$work/ready" --log-level warn &
pid=$!
read -r -t 30 addr <&3

# cpu PID: user+system CPU seconds of a process so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "/proc/$1/stat"; }

# run LABEL ARGS...: one fetch; prints "LABEL wall client_cpu server_cpu".
run() {
	local label=$1
	shift
	local s0 t0 t1 s1
	s0=$(cpu "$pid")
	t0=$(date +%s.%N)
	# The client's own CPU from bash's time builtin (user + sys).
	local tf=$work/time
	{ TIMEFORMAT='%U %S'; time blockcat get "$addr" bench "$@" >/dev/null 2>&1; } 2>"$tf"
	t1=$(date +%s.%N)
	s1=$(cpu "$pid")
	awk -v l="$label" -v t0="$t0" -v t1="$t1" -v s0="$s0" -v s1="$s1" '{printf "%s %.3f %.3f %.3f\n", l, t1-t0, $1+$2, s1-s0}' "$tf"
}

echo "# $SIZE volume, $ROUNDS interleaved rounds: label wall_s client_cpu_s server_cpu_s"
: >"$work/results"
for i in $(seq "$ROUNDS"); do
	run verify | tee -a "$work/results"
	run no-verify --no-verify | tee -a "$work/results"
done
echo "# medians"
for label in verify no-verify; do
	for col in 2 3 4; do
		grep "^$label " "$work/results" | awk -v c=$col '{print $c}' | sort -g | awk '{a[NR]=$1} END {printf "%s ", (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'
	done | awk -v l="$label" '{printf "%-9s wall %.3f s, client cpu %.3f s, server cpu %.3f s\n", l, $1, $2, $3}'
done
