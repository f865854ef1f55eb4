#!/usr/bin/env bash
# Quickstart: build blockd and blockcat, create a volume of random data,
# serve it on loopback, fetch it with blockcat, verify it, and print the
# throughput and the transport that ran. Exits non-zero on any mismatch.
#
#   ./quickstart.sh               # 256 MiB volume
#   SIZE=1GiB ./quickstart.sh     # any size blockd accepts
set -euo pipefail
cd "$(dirname "$0")"
SIZE=${SIZE:-256MiB}
DATA_CONNS=${DATA_CONNS:-4}

work=$(mktemp -d -t blockxfer-quickstart.XXXXXX)
pid=
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" || true; fi
	rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

step "build"
go build -o "$work/bin/" ./cmd/blockd ./cmd/blockcat
export PATH="$work/bin:$PATH"

step "create a $SIZE volume of random data"
mkdir -p "$work/data"
blockd keygen -o "$work/data/blockd.key"
export BLOCKXFER_KEY_FILE="$work/data/blockd.key"
blockd volume create demo --size "$SIZE" --fill random --data "$work/data"

step "start blockd on loopback"
mkfifo "$work/ready"
exec 3<>"$work/ready" # open read-write so neither side blocks on open
blockd serve --data "$work/data" --listen 127.0.0.1:0 --ready-file "$work/ready" \
	--log-level warn &
pid=$!
if ! read -r -t 30 addr <&3; then
	echo "quickstart: blockd did not start within 30s" >&2
	exit 1
fi
echo "blockd (pid $pid) listening on $addr"
blockcat ls "$addr"

step "fetch with blockcat, checking every extent's crc32c"
blockcat get "$addr" demo --verify --data-conns "$DATA_CONNS" -o "$work/demo.out"

step "compare with the volume on disk"
want=$(sha256sum <"$work/data/volumes/demo.vol" | cut -d' ' -f1)
got=$(sha256sum <"$work/demo.out" | cut -d' ' -f1)
echo "volume  sha256 $want"
echo "fetched sha256 $got"
if [ "$want" != "$got" ]; then
	echo "quickstart: MISMATCH: the fetched bytes differ from the volume" >&2
	exit 1
fi

step "fetch again into memory only (no output file) for the transfer rate"
blockcat get "$addr" demo --data-conns "$DATA_CONNS"

step "fetch through the software NIC (devmem RX emulated: payload lands in a bound arena as devmem frags)"
blockcat get "$addr" demo --verify --devmem emulate --data-conns "$DATA_CONNS"

step "stop blockd (SIGTERM)"
kill -TERM "$pid"
wait "$pid"
pid=
echo "quickstart: OK"
