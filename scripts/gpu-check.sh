#!/usr/bin/env bash
# GPU provider check: builds the gpu provider plugin and runs its tests
# against the real CUDA driver (libcuda.so.1) when this machine has one: the
# provider checks (allocation, dmabuf export, copies, gathers, checksums),
# the GPUDirect RDMA flush choice the driver's attributes lead to, and a
# fetch from a blockd engine into GPU memory (TestFetchIntoGPU, every
# extent's CRC-32C checked on the GPU buffer). The same tests always run
# against the stand-in driver (providers/gpu/testdata/fakecuda.c); without a
# GPU the script says so and runs those only. Then, where Debian's python3
# has pytest, numpy and a CUDA-enabled torch, the Python client's CUDA tests
# (python/tests/test_cuda.py) run against real blockd and `blockcat agent`
# processes: reads into CUDA tensors by IPC handle through the agent's gpu
# plugin on the real driver, and load_safetensors straight to cuda:0. Needs
# go and gcc; takes well under five minutes (TIMEOUT, default 240s, bounds
# the Go tests).
#
#	scripts/gpu-check.sh                 # device 0
#	BLOCKXFER_GPU_DEVICE=1 scripts/gpu-check.sh
#	BLOCKXFER_LIBCUDA=/path/libcuda.so.1 scripts/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TIMEOUT=${TIMEOUT:-240s}
start=$SECONDS

echo "== go build ./providers/gpu"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/blockxfer-provider-gpu" ./providers/gpu
echo "built blockxfer-provider-gpu ($(du -h "$tmp/blockxfer-provider-gpu" | cut -f1))"

echo "== the machine"
real=no
if [ -n "${BLOCKXFER_LIBCUDA:-}" ]; then
	echo "driver library from BLOCKXFER_LIBCUDA: $BLOCKXFER_LIBCUDA"
	real=yes
elif ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 '; then
	echo "driver library: $(ldconfig -p | grep 'libcuda\.so\.1 ' | head -1 | sed 's/.*=> //')"
	real=yes
else
	echo "no libcuda.so.1 here: no NVIDIA driver installed"
fi
if command -v nvidia-smi >/dev/null 2>&1; then
	nvidia-smi --query-gpu=index,name,driver_version,compute_cap,memory.total --format=csv,noheader 2>&1 || true
else
	echo "no nvidia-smi"
fi
if [ "$real" = no ]; then
	echo "NO GPU: running the gpu provider's tests against the stand-in driver only"
fi

echo "== go test -v ./providers/gpu (timeout $TIMEOUT)"
log=$tmp/test.log
status=0
go test -count=1 -v -timeout "$TIMEOUT" ./providers/gpu >"$log" 2>&1 || status=$?
# What ran: every test's verdict, and what the real driver reported.
grep -E '^\s*--- (PASS|FAIL|SKIP)' "$log" || true
grep -E 'fetched [0-9]+ bytes into|no usable CUDA driver|mmap of the GPU dmabuf|lets the CPU map' "$log" | sed 's/^ */   /' | sort -u || true
if [ "$status" -ne 0 ]; then
	echo "== FAIL: go test exited $status; the end of its output:"
	tail -n 60 "$log"
	exit "$status"
fi
echo "== python/tests/test_cuda.py (the agent and the Python client into CUDA memory)"
py=/usr/bin/python3
if ! "$py" -c 'import pytest, numpy' 2>/dev/null; then
	echo "SKIP: $py lacks pytest or numpy (apt-get install python3-pytest python3-numpy)"
else
	go build -o "$tmp/bin/" ./cmd/blockd ./cmd/blockcat ./providers/gpu
	pylog=$tmp/pytest.log
	pystatus=0
	BLOCKXFER_BIN=$tmp/bin PYTHONDONTWRITEBYTECODE=1 timeout 180 "$py" -m pytest -v -rs -p no:cacheprovider \
		python/tests/test_cuda.py >"$pylog" 2>&1 || pystatus=$?
	# Every test's verdict, and why any skipped (test_torch_cuda needs a
	# torch that sees a GPU: apt-get install python3-torch, or a CUDA build).
	grep -E '(PASSED|SKIPPED|FAILED|ERROR)( |$)|^SKIPPED' "$pylog" | sed 's/^/   /' || true
	if [ "$pystatus" -ne 0 ]; then
		echo "== FAIL: the Python CUDA tests exited $pystatus; the end of their output:"
		tail -n 60 "$pylog"
		exit 1
	fi
fi

if [ "$real" = yes ]; then
	if grep -qE -- '--- SKIP: .*/real' "$log"; then
		echo "== FAIL: a driver library is installed but the real-driver tests skipped (reason above)"
		exit 1
	fi
	echo "== ok: the gpu provider passed against the real driver and the stand-in ($((SECONDS - start))s)"
else
	echo "== ok: NO GPU here; the gpu provider passed against the stand-in driver only ($((SECONDS - start))s)"
fi
