#!/usr/bin/env bash
# bench-peers.sh: blockxfer beside the standard peers, on one machine, in one
# run. One volume file is served by blockd and, the very same file
# (DATA/volumes/v.vol), by nbdkit's file plugin; each comparison runs the
# blockxfer side and the peer side in interleaved rounds (the order swapped
# every round) and prints medians and their ratio, with the CPU both
# processes spent (client rusage from /usr/bin/time, server utime+stime from
# /proc/PID/stat before and after).
#
#   scripts/bench-peers.sh                      # SIZE=1GiB ROUNDS=5
#   SIZE=64MiB ROUNDS=1 scripts/bench-peers.sh  # quick check, under a minute
#
# Environment:
#   SIZE      volume size (default 1GiB), any of KiB MiB GiB
#   ROUNDS    rounds per comparison (default 5); the figures are medians
#   DURATION  seconds per random-read run (default 3; 1 when SIZE < 1GiB)
#   CLIENTS   concurrent clients in the last comparison (default 16), each
#             fetching a volume of SIZE/4 (nbdkit serves that one too)
#   ONLY      run only these comparisons (space-separated prefixes of the
#             names below, such as "rand" or "mem file"; default all)
#   BIN       directory holding blockd and blockcat (default: bin/, built
#             from this checkout with go build, as README.md does)
#   KEEP      set to keep the work directory (it is printed)
#
# Needs nbdkit, nbdcopy (libnbd-bin), fio (with its nbd engine), iperf3,
# python3 and /usr/bin/time; missing ones are installed with apt-get (root).
#
# Comparisons (blockxfer side | peer side):
#   mem        blockcat get S v                 | nbdcopy nbd://... null:
#   conn1      blockcat get S v --data-conns 1  | iperf3 -c, one stream, SIZE bytes
#   file       blockcat get S v -o F            | nbdcopy --flush nbd://... F
#   rand-B-dN  blockcat bench --sizes B --depth N --json
#                                               | fio --ioengine=nbd --rw=randread --bs=B --iodepth=N
#   clientsK   K x blockcat get S c at once     | K x nbdcopy nbd://.../ null: at once
# Rates are whole processes (bytes / wall seconds of the client, start to
# exit). "cpu s/GB" adds the client's user+sys and the server's, per GB
# (10^9 bytes) moved; the random reads report server CPU per read instead.
#
# Everything runs on this machine over loopback: with shared or few cores
# the figures are indicative, and the two sides compete with the same
# neighbours only because their rounds interleave.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=${SIZE:-1GiB}
ROUNDS=${ROUNDS:-5}
CLIENTS=${CLIENTS:-16}

say() { printf '%s\n' "$*" >&2; }
die() { say "bench-peers: $*"; exit 1; }

# --- tools ---------------------------------------------------------------
missing=()
command -v nbdkit >/dev/null || missing+=(nbdkit)
command -v nbdcopy >/dev/null || missing+=(libnbd-bin)
command -v fio >/dev/null || missing+=(fio)
command -v iperf3 >/dev/null || missing+=(iperf3)
command -v python3 >/dev/null || missing+=(python3)
[ -x /usr/bin/time ] || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
	say "installing from Debian: ${missing[*]}"
	[ "$(id -u)" = 0 ] || die "need root to apt-get install ${missing[*]} (or install them first)"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
fio --enghelp 2>/dev/null | grep -qw nbd || die "this fio has no nbd engine (Debian's fio has it)"

bytes_of() { # 64MiB -> 67108864
	python3 -c '
import re, sys
m = re.fullmatch(r"(\d+)\s*([KMGT]?)(i?B)?", sys.argv[1].strip(), re.I)
if not m: sys.exit("bad size: " + sys.argv[1])
print(int(m[1]) << (10 * " KMGT".index((m[2] or " ").upper())))' "$1"
}
size=$(bytes_of "$SIZE")
csize=$((size / 4))
[ "$csize" -ge 1048576 ] || die "SIZE must be at least 4MiB"
if [ -z "${DURATION:-}" ]; then
	DURATION=3
	[ "$size" -ge $((1 << 30)) ] || DURATION=1
fi

work=$(mktemp -d -t blockxfer-peers.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	if [ -n "${KEEP:-}" ]; then say "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

if [ -z "${BIN:-}" ]; then
	BIN=$PWD/bin
	go build -o "$BIN/" ./cmd/blockd ./cmd/blockcat
fi
export PATH="$BIN:$PATH"

# --- volumes and servers ---------------------------------------------------
data=$work/data
mkdir -p "$data"
blockd keygen -o "$data/blockd.key" >/dev/null
export BLOCKXFER_KEY_FILE=$data/blockd.key
blockd volume create v --size "$size" --fill random --data "$data" >/dev/null
blockd volume create c --size "$csize" --fill random --data "$data" >/dev/null
vol=$data/volumes/v.vol
cvol=$data/volumes/c.vol
[ -f "$vol" ] && [ -f "$cvol" ] || die "no $vol: where does blockd keep volume files?"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
	for _ in $(seq 100); do
		python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	die "nothing listening on port $1"
}

mkfifo "$work/ready"
exec 3<>"$work/ready"
blockd serve --data "$data" --listen 127.0.0.1:0 --ready-file "$work/ready" --log-level error \
	2>"$work/blockd.log" &
bpid=$!
pids+=("$bpid")
read -r -t 30 addr <&3 || die "blockd did not start (see $work/blockd.log)"

nport=$(free_port)
nbdkit -f -r -i 127.0.0.1 -p "$nport" file file="$vol" 2>"$work/nbdkit.log" &
npid=$!
pids+=("$npid")
cport=$(free_port)
nbdkit -f -r -i 127.0.0.1 -p "$cport" file file="$cvol" 2>"$work/nbdkit-c.log" &
cpid=$!
pids+=("$cpid")
iport=$(free_port)
iperf3 -s -p "$iport" -B 127.0.0.1 >"$work/iperf3.log" 2>&1 &
ipid=$!
pids+=("$ipid")
wait_port "$nport"
wait_port "$cport"
wait_port "$iport"
# Both sides read from the page cache. This VM's host reclaims the guest's
# page cache as it runs (about 1 MB a second of an idle 1 GiB file), so the
# volumes are read again before every run, of either side.
warm() { cat "$vol" "$cvol" >/dev/null; }

tck=$(getconf CLK_TCK)
results=$work/results
: >"$results"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
record() { echo "$*" >>"$results"; } # workload side metric value

# timed OUT CMD...: runs CMD, writing "wall user sys" to OUT.
timed() {
	local out=$1
	shift
	/usr/bin/time -f '%e %U %S' -o "$out" "$@" >"$work/last.out" 2>"$work/last.err" ||
		{ cat "$work/last.err" >&2; die "failed: $*"; }
}

# transfer WORKLOAD SIDE SERVER_PID BYTES CMD...: one whole-process fetch.
transfer() {
	local wl=$1 side=$2 spid=$3 n=$4
	shift 4
	local s0 s1
	warm
	s0=$(cpu_ticks "$spid")
	timed "$work/t" "$@"
	s1=$(cpu_ticks "$spid")
	read -r wall user sys <"$work/t"
	record "$wl" "$side" rate "$(python3 -c "print($n / max($wall, 0.01))")"
	record "$wl" "$side" cpu "$(python3 -c "print(($user + $sys + ($s1 - $s0) / $tck) / ($n / 1e9))")"
}

# many WORKLOAD SIDE SERVER_PID BYTES_EACH CMD...: CLIENTS copies of CMD at once.
many() {
	local wl=$1 side=$2 spid=$3 n=$4
	shift 4
	local s0 s1 t0 t1 i cpids=()
	warm
	s0=$(cpu_ticks "$spid")
	t0=$(date +%s.%N)
	for i in $(seq "$CLIENTS"); do
		/usr/bin/time -f '%e %U %S' -o "$work/m.$i" "$@" >/dev/null 2>"$work/m.$i.err" &
		cpids+=($!)
	done
	for p in "${cpids[@]}"; do wait "$p" || die "a client failed: $* (see $work/m.*.err)"; done
	t1=$(date +%s.%N)
	s1=$(cpu_ticks "$spid")
	local cl
	cl=$(cat "$work"/m.[0-9]* | awk '{u += $2 + $3} END {print u}')
	record "$wl" "$side" rate "$(python3 -c "print($CLIENTS * $n / ($t1 - $t0))")"
	record "$wl" "$side" cpu "$(python3 -c "print(($cl + ($s1 - $s0) / $tck) / ($CLIENTS * $n / 1e9))")"
}

# randread WORKLOAD SIDE BS DEPTH: random reads for DURATION seconds.
randread() {
	local wl=$1 side=$2 bs=$3 depth=$4
	local spid s0 s1
	if [ "$side" = blockxfer ]; then spid=$bpid; else spid=$npid; fi
	warm
	s0=$(cpu_ticks "$spid")
	if [ "$side" = blockxfer ]; then
		timed "$work/t" blockcat bench "$addr" v --sizes "$bs" --depth "$depth" --duration "${DURATION}s" --json
		cp "$work/last.out" "$work/r.json"
	else
		timed "$work/t" fio --name=r --ioengine=nbd --uri="nbd://127.0.0.1:$nport/" --rw=randread \
			--bs="${bs%iB}" --iodepth="$depth" --time_based --runtime="$DURATION" \
			--lat_percentiles=1 --output-format=json --output="$work/r.json"
	fi
	s1=$(cpu_ticks "$spid")
	python3 - "$side" "$work/r.json" "$work/t" "$((s1 - s0))" "$tck" "$wl" >>"$results" <<'EOF'
import json, sys
side, path, tpath, sticks, tck, wl = sys.argv[1:7]
j = json.load(open(path))
if side == "blockxfer":
    r = j["sizes"][0]
    ops, n = r["requests"] / r["seconds"], r["requests"]
    p50, p99 = r["p50_seconds"] * 1e6, r["p99_seconds"] * 1e6
else:
    r = j["jobs"][0]["read"]
    ops, n = r["iops"], r["total_ios"]
    # Total latency, submission included, as blockcat bench measures it;
    # fio's default percentiles (clat) leave out the submission, which for
    # the nbd engine is the write of the request (about 12 us of 47 for
    # 4 KiB reads at depth 1 on the 2-core VM).
    pc = r["lat_ns"]["percentile"]
    p50, p99 = pc["50.000000"] / 1e3, pc["99.000000"] / 1e3
wall, user, sys_ = map(float, open(tpath).read().split())
srv = int(sticks) / int(tck)
print(wl, side, "ops", ops)
print(wl, side, "p50", p50)
print(wl, side, "p99", p99)
print(wl, side, "srvus", srv / n * 1e6)
print(wl, side, "cpuus", (srv + user + sys_) / n * 1e6)
EOF
}

nbd=nbd://127.0.0.1:$nport/
out=$work/out.bin
say "blockxfer $(blockcat --version 2>/dev/null | head -1 || true), $(nbdkit --version), $(nbdcopy --version | head -1), $(fio --version), $(iperf3 --version | head -1)"
say "volume $SIZE ($size bytes), $ROUNDS rounds, random reads ${DURATION}s each, $CLIENTS clients x $((csize >> 20)) MiB; $(nproc) cores"
# want NAME: whether ONLY selects comparison NAME.
want() {
	[ -z "${ONLY:-}" ] && return 0
	local o
	for o in $ONLY; do
		case $1 in "$o"*) return 0 ;; esac
	done
	return 1
}

for round in $(seq "$ROUNDS"); do
	if [ $((round % 2)) = 1 ]; then order="blockxfer peer"; else order="peer blockxfer"; fi
	say "round $round/$ROUNDS ($order first)"
	want mem && for side in $order; do
		if [ "$side" = blockxfer ]; then
			transfer mem blockxfer "$bpid" "$size" blockcat get "$addr" v
		else
			transfer mem peer "$npid" "$size" nbdcopy "$nbd" null:
		fi
	done
	want conn1 && for side in $order; do
		if [ "$side" = blockxfer ]; then
			transfer conn1 blockxfer "$bpid" "$size" blockcat get "$addr" v --data-conns 1
		else
			transfer conn1 peer "$ipid" "$size" iperf3 -c 127.0.0.1 -p "$iport" -n "$size"
		fi
	done
	want file && for side in $order; do
		rm -f "$out"
		if [ "$side" = blockxfer ]; then
			transfer file blockxfer "$bpid" "$size" blockcat get "$addr" v -o "$out"
		else
			transfer file peer "$npid" "$size" nbdcopy --flush "$nbd" "$out"
		fi
		rm -f "$out"
	done
	for bs in 4KiB 64KiB; do
		for depth in 8 1; do
			want "rand-$bs-d$depth" && for side in $order; do
				randread "rand-$bs-d$depth" "$side" "$bs" "$depth"
			done
		done
	done
	want "clients$CLIENTS" && for side in $order; do
		if [ "$side" = blockxfer ]; then
			many "clients$CLIENTS" blockxfer "$bpid" "$csize" blockcat get "$addr" c
		else
			many "clients$CLIENTS" peer "$cpid" "$csize" nbdcopy "nbd://127.0.0.1:$cport/" null:
		fi
	done
done

python3 - "$results" "$ROUNDS" <<'EOF'
import statistics, sys
from collections import defaultdict
vals = defaultdict(list)
for line in open(sys.argv[1]):
    wl, side, metric, v = line.split()
    vals[wl, side, metric].append(float(v))
med = {k: statistics.median(v) for k, v in vals.items()}
order = []
for line in open(sys.argv[1]):
    wl = line.split()[0]
    if wl not in order:
        order.append(wl)
peer = {"mem": "nbdcopy null:", "conn1": "iperf3 1 stream", "file": "nbdcopy --flush",
        "clients": "nbdcopy x N"}
print()
print(f"medians of {sys.argv[2]} interleaved rounds; ratio = blockxfer / peer (higher is better for blockxfer)")
print()
print(f"{'workload':<16} {'blockxfer':>12} {'peer':>12} {'ratio':>7}   {'cpu s/GB bx':>11} {'peer':>7}   peer side")
for wl in order:
    if wl.startswith("rand"):
        continue
    b, p = med[wl, "blockxfer", "rate"], med[wl, "peer", "rate"]
    name = peer.get(wl, peer["clients"] if wl.startswith("clients") else "")
    print(f"{wl:<16} {b/2**20:>8.0f} MiB/s {p/2**20:>6.0f} MiB/s {b/p:>6.2f}x   "
          f"{med[wl, 'blockxfer', 'cpu']:>11.2f} {med[wl, 'peer', 'cpu']:>7.2f}   {name}")
print()
print(f"{'random reads':<16} {'ops/s bx':>9} {'fio':>8} {'ratio':>6}   {'p50 us bx':>9} {'fio':>6}   {'p99 us bx':>9} {'fio':>6}"
      f"   {'srv us/read bx':>14} {'nbdkit':>6}   {'cli+srv us/read bx':>18} {'fio+nbdkit':>10}")
for wl in order:
    if not wl.startswith("rand"):
        continue
    g = lambda side, m: med[wl, side, m]
    print(f"{wl:<16} {g('blockxfer','ops'):>9.0f} {g('peer','ops'):>8.0f} {g('blockxfer','ops')/g('peer','ops'):>5.2f}x"
          f"   {g('blockxfer','p50'):>9.0f} {g('peer','p50'):>6.0f}   {g('blockxfer','p99'):>9.0f} {g('peer','p99'):>6.0f}"
          f"   {g('blockxfer','srvus'):>14.1f} {g('peer','srvus'):>6.1f}   {g('blockxfer','cpuus'):>18.1f} {g('peer','cpuus'):>10.1f}")
EOF
say ""
say "indicative only when cores are shared: both sides ran on this machine over loopback."
