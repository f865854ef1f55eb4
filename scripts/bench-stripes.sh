#!/usr/bin/env bash
# Does striping pay? Six blockd hosts and a client in network namespaces on
# one bridge; each host's egress is rate-limited with tc tbf to stand for
# its NIC. The same file is read whole from one host, and as a 4+2 striped
# volume over all six, healthy and with two hosts down, in interleaved
# rounds. Prints each round and the medians, and the ratios against the
# single host. Needs root, iproute2 (ip, tc) and the sch_tbf qdisc.
#
#   sudo ./scripts/bench-stripes.sh                    # 128 MiB, 200mbit a host, 3 rounds
#   SIZE=256MiB RATE=400mbit ROUNDS=5 sudo ./scripts/bench-stripes.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-128MiB}
RATE=${RATE:-200mbit}
ROUNDS=${ROUNDS:-3}
HOSTS=6
id=bs$$
work=$(mktemp -d -t blockxfer-bench-stripes.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	for i in $(seq 0 $HOSTS); do ip netns del "$id$i" 2>/dev/null || true; done
	ip link del "${id}br" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/bin/" ./cmd/blockd ./cmd/blockcat
export PATH="$work/bin:$PATH"
blockd keygen -o "$work/key" >/dev/null
export BLOCKXFER_KEY_FILE="$work/key"

# Namespace 0 is the client; 1..6 are the hosts, 10.214.0.(i+1).
ip link add "${id}br" type bridge
ip link set "${id}br" up
for i in $(seq 0 $HOSTS); do
	ns=$id$i
	ip netns add "$ns"
	ip link add "${id}v$i" type veth peer name "${id}p$i"
	ip link set "${id}v$i" master "${id}br" up
	ip link set "${id}p$i" netns "$ns"
	ip -n "$ns" link set "${id}p$i" name eth0
	ip -n "$ns" addr add "10.214.0.$((i + 1))/24" dev eth0
	ip -n "$ns" link set eth0 up
	ip -n "$ns" link set lo up
	if [ "$i" -gt 0 ]; then
		ip netns exec "$ns" tc qdisc add dev eth0 root tbf rate "$RATE" burst 256kb latency 50ms
	fi
done

head -c "$(numfmt --from=iec "${SIZE%iB}")" /dev/urandom >"$work/src" # 128MiB: 128M for numfmt
peers=
for i in $(seq 1 $HOSTS); do
	mkdir -p "$work/d$i"
	mkfifo "$work/ready$i"
	exec {fd}<>"$work/ready$i"
	ip netns exec "$id$i" blockd serve --data "$work/d$i" --key-file "$work/key" --listen "10.214.0.$((i + 1)):7070" \
		--ready-file "$work/ready$i" --log-level warn &
	pids+=($!)
	read -r -t 30 _ <&"$fd"
	peers="${peers:+$peers,}10.214.0.$((i + 1)):7070"
done
c() { ip netns exec "${id}0" "$@"; }
c blockcat upload 10.214.0.2:7070 whole "$work/src" >/dev/null
c blockcat put "$work/src" --name striped --ec 4+2 --peers "$peers" --manifest "$work/manifest" >/dev/null

# run LABEL ARGS...: one get into memory; prints "LABEL seconds".
run() {
	local label=$1
	shift
	local t0 t1
	t0=$(date +%s.%N)
	c blockcat get "$@" --log-level error >/dev/null
	t1=$(date +%s.%N)
	awk -v l="$label" -v a="$t0" -v b="$t1" 'BEGIN {printf "%s %.3f\n", l, b-a}'
}

echo "# $SIZE, each host's egress limited to $RATE; seconds per get, $ROUNDS interleaved rounds"
: >"$work/results"
for r in $(seq "$ROUNDS"); do
	run one-host 10.214.0.2:7070 whole | tee -a "$work/results"
	run striped-4+2 --manifest "$work/manifest" | tee -a "$work/results"
done
# Two hosts down: the last two blockd processes stop.
for p in "${pids[@]: -2}"; do kill -TERM "$p"; wait "$p" || true; done
for r in $(seq "$ROUNDS"); do
	run one-host 10.214.0.2:7070 whole | tee -a "$work/results"
	run striped-2-down --manifest "$work/manifest" | tee -a "$work/results"
done
median() { grep "^$1 " "$work/results" | awk '{print $2}' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
one=$(median one-host)
echo "# medians (seconds) and speed-up over one host"
for l in one-host striped-4+2 striped-2-down; do
	m=$(median "$l")
	awk -v l="$l" -v m="$m" -v o="$one" 'BEGIN {printf "%-15s %7.3f s  %5.2fx\n", l, m, o/m}'
done
