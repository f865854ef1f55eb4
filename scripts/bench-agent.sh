#!/usr/bin/env bash
# Python through the local agent against blockcat get, in one run: a 1 GiB
# random volume on a loopback blockd, fetched ROUNDS times (default 5) each
# way, alternating: `blockcat get --json` into host memory (no output
# file), and blockxfer.Client.read_into of a numpy array from Client.empty
# (registered memory, no copy) through `blockcat agent`; then
# load_safetensors of a 1 GiB safetensors volume against a raw read_into of
# the same bytes. Prints each run and the medians. Needs Debian's python3
# with numpy (apt-get install python3-numpy). Figures go in
# docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
PY=${PY:-/usr/bin/python3}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
# BIN: a directory with blockd and blockcat already built (default: build).
bin=${BIN:-$work/bin}
[ -n "${BIN:-}" ] || go build -o "$work/bin/" ./cmd/blockd ./cmd/blockcat
"$bin/blockd" keygen -o "$work/key" >/dev/null
"$bin/blockd" volume create raw --size 1GiB --fill random --data "$work/data" >/dev/null
PYTHONPATH=python "$PY" - "$work/model.safetensors" <<'PYEOF'
import sys, numpy as np
sys.path.insert(0, "python/tests")
from safetensors_writer import write_safetensors
rng = np.random.default_rng(1)
# 1 GiB in 16 float32 tensors of 64 MiB.
ts = {"layer.%02d.weight" % i: rng.standard_normal((4096, 4096), dtype=np.float32) for i in range(16)}
open(sys.argv[1], "wb").write(write_safetensors(ts, metadata={"format": "pt"}))
PYEOF
"$bin/blockd" volume import model.safetensors "$work/model.safetensors" --data "$work/data" >/dev/null
rm "$work/model.safetensors"
mkfifo "$work/ready"
exec 3<>"$work/ready"
"$bin/blockd" serve --data "$work/data" --key-file "$work/key" --listen 127.0.0.1:0 --ready-file "$work/ready" 2>"$work/blockd.log" &
read -r addr <&3
"$bin/blockcat" agent --socket "$work/agent.sock" --key-file "$work/key" --log-level warn 2>"$work/agent.log" &
export BLOCKXFER_KEY_FILE=$work/key
for _ in $(seq 100); do [ -S "$work/agent.sock" ] && break; sleep 0.05; done
PYTHONPATH=python "$PY" - "$bin/blockcat" "$addr" "$work/agent.sock" "$ROUNDS" <<'PYEOF'
import json, statistics, subprocess, sys, time
import numpy as np
import blockxfer
blockcat, addr, sock, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
GiB = 1 << 30
c = blockxfer.Client(sock)
size = c.stat(addr, "raw")["size_bytes"]
arr = c.empty((size,), np.uint8)
c.read_into(arr, addr, "raw")  # warm the session and fault the pages in
get, agent = [], []
for i in range(rounds):
    out = json.loads(subprocess.run([blockcat, "get", addr, "raw", "--json"], check=True,
                                    capture_output=True).stdout)
    get.append(out["bytes_per_second"])
    t = time.perf_counter()
    c.read_into(arr, addr, "raw")
    agent.append(size / (time.perf_counter() - t))
    print("round %d: blockcat get %.2f GiB/s, agent read_into numpy %.2f GiB/s" % (i + 1, get[-1] / GiB, agent[-1] / GiB))
g, a = statistics.median(get), statistics.median(agent)
print("median: blockcat get %.2f GiB/s, agent read_into %.2f GiB/s: ratio %.2f" % (g / GiB, a / GiB, a / g))
st = c.stat(addr, "model.safetensors")["size_bytes"]
del arr
c.load_safetensors(addr, "model.safetensors")
ls, rr = [], []
# Both into fresh memory each round: load_safetensors maps a new buffer.
for i in range(rounds):
    t = time.perf_counter()
    buf = c.alloc(st)
    c.submit(addr, "model.safetensors", 0, st, buf).wait()
    view = np.frombuffer(buf.mmap, np.uint8)  # kept, as the tensors are
    buf.close()  # unregistered, as load_safetensors does
    rr.append(st / (time.perf_counter() - t))
    del view, buf  # unmapped now, as the tensors' memory is below
    t = time.perf_counter()
    tensors = c.load_safetensors(addr, "model.safetensors")
    ls.append(st / (time.perf_counter() - t))
    del tensors
    print("round %d: raw read_into %.2f GiB/s, load_safetensors %.2f GiB/s" % (i + 1, rr[-1] / GiB, ls[-1] / GiB))
r, l = statistics.median(rr), statistics.median(ls)
print("median: raw %.2f GiB/s, load_safetensors %.2f GiB/s: ratio %.2f" % (r / GiB, l / GiB, l / r))
PYEOF
