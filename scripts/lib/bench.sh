# Shared by the scripts/bench-*.sh that time whole blockcat processes
# against one blockd on loopback. Source it after setting SIZE and $work
# (a temporary directory the caller removes); it builds the binaries, serves
# a random volume "bench" of SIZE (or the volumes VOLUMES names, as
# "NAME:SIZE ..."), and stops blockd on exit.
#
#   bench_serve [PLUGIN...]   build blockd, blockcat (and provider plugins),
#                             serve; sets $pid and $addr
#   bench_get LABEL ENV ARGS  one 'blockcat get $addr bench ARGS' with ENV
#                             set; prints "LABEL wall client_cpu server_cpu"
#   bench_medians LABEL...    the median of each column per label

pid=
bench_stop() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" || true; fi
	rm -rf "$work"
}
trap bench_stop EXIT

bench_serve() {
	go build -o "$work/bin/" ./cmd/blockd ./cmd/blockcat
	local p
	for p in "$@"; do # blockcat finds plugins in its own directory
		go build -o "$work/bin/blockxfer-provider-$p" "./providers/$p"
	done
	export PATH="$work/bin:$PATH"
	mkdir -p "$work/data"
	blockd keygen -o "$work/data/blockd.key" >/dev/null
	export BLOCKXFER_KEY_FILE="$work/data/blockd.key"
	local v
	for v in ${VOLUMES:-bench:$SIZE}; do
		blockd volume create "${v%%:*}" --size "${v#*:}" --fill random --data "$work/data" >/dev/null
	done
	mkfifo "$work/ready"
	exec 3<>"$work/ready"
	blockd serve --data "$work/data" --listen 127.0.0.1:0 --ready-file "$work/ready" --log-level warn &
	pid=$!
	read -r -t 30 addr <&3
}

# cpu PID: user+system CPU seconds of a process so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "/proc/$1/stat"; }

# The client's CPU is bash's time: user + sys of blockcat and its children
# (a provider plugin among them). VOLUME names the volume (default bench);
# OUT, a file to keep blockcat's stdout in (default: dropped).
bench_get() {
	local label=$1 env=$2
	shift 2
	local s0 t0 t1 s1 tf=$work/time
	s0=$(cpu "$pid")
	# The wall clock is bash's own ($EPOCHREALTIME), and the environment
	# is set in a subshell, so that neither a date(1) nor an env(1)
	# process is timed with blockcat (together about 2 ms here, 3% of a
	# 256 MiB get). (An explicit exec in the subshell would lose time's
	# report.)
	t0=${EPOCHREALTIME/,/.}
	{ TIMEFORMAT='%U %S'; time (
		[ -z "$env" ] || export $env
		blockcat get "$addr" "${VOLUME:-bench}" "$@" >"${OUT:-/dev/null}" 2>&1
	); } 2>"$tf"
	t1=${EPOCHREALTIME/,/.}
	s1=$(cpu "$pid")
	awk -v l="$label" -v t0="$t0" -v t1="$t1" -v s0="$s0" -v s1="$s1" '{printf "%s %.3f %.3f %.3f\n", l, t1-t0, $1+$2, s1-s0}' "$tf"
}

# Reads the lines bench_get printed from $work/results.
bench_medians() {
	echo "# medians: label wall_s client_cpu_s server_cpu_s"
	local label col
	for label in "$@"; do
		printf '%s ' "$label"
		for col in 2 3 4; do
			grep "^$label " "$work/results" | awk -v c=$col '{print $c}' | sort -g |
				awk '{a[NR]=$1} END {printf "%s ", (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'
		done
		echo
	done
}
