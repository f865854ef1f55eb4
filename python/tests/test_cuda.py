"""Reads into CUDA device memory through the agent and its gpu provider
plugin, on the stand-in driver (providers/gpu/testdata/fakecuda.c): device
memory there is memfd-backed host memory, so what the plugin writes in the
agent's process the test reads back here with cuMemcpyDtoH."""

import os
import signal
import struct
import subprocess
import sys
import time

import pytest

import blockxfer
from blockxfer import BlockxferError, Client
from blockxfer import _safetensors

np = pytest.importorskip("numpy")

from fakecuda import GRANULARITY, Cuda, DevArray  # noqa: E402
from volumes import safetensors_volumes  # noqa: E402

@pytest.fixture
def cuda(gpu_agent):
    return Cuda(os.environ["BLOCKXFER_LIBCUDA"])


def test_read_into_cuda_ipc(gpu_agent, blockd, cuda):
    want = blockd.files["odd"]
    n = 2 << 20
    p = cuda.alloc(n + 300000)
    cuda.htod(p, b"\xee" * (n + 300000))
    with Client(gpu_agent.socket) as c:
        res = c.read_into(DevArray(p, n), blockd.addr, "odd", offset=5)
        assert res.ok and res.fetched_bytes == n and res.verified and res.transport == "tcp"
        assert res.error is None and "fallback_reason" in res.as_dict()
        assert cuda.dtoh(p, n) == want[5:5 + n]
        # A sub-range at an offset of the allocation: the same registration.
        sub = p + n + 12345
        c.read_into(DevArray(sub, 100000), blockd.addr, "odd", offset=777)
        got = cuda.dtoh(p, n + 300000)
        assert got[n + 12345:n + 112345] == want[777:100777]
        assert got[n:n + 12345] == b"\xee" * 12345 and got[n + 112345:] == b"\xee" * (300000 - 112345)
        assert len(c._device_regions) == 1
        (reg,) = c._device_regions.values()
        assert reg.kind == "cuda-ipc" and reg.base == p and reg.size == n + 300000
        # The allocation freed and another made (at the same address, if
        # the driver reuses it): registered anew, never the old import.
        cuda.free(p)
        q = cuda.alloc(n + 300000)
        c.read_into(DevArray(q, 4096), blockd.addr, "odd")
        assert cuda.dtoh(q, 4096) == want[:4096]
        bases = sorted(r.base for r in c._device_regions.values())
        assert bases == ([q] if q == p else sorted([p, q]))
        c.release_device_memory()
        assert c._device_regions == {}
        cuda.free(q)


def test_read_into_cuda_vmm(gpu_agent, blockd, cuda):
    want = blockd.files["odd"]
    base = cuda.vmm(2)

    def dtoh(p, n):  # a copy stays within one allocation
        cut = max(p, min(p + n, base + GRANULARITY))
        return cuda.dtoh(p, cut - p) + (cuda.dtoh(cut, p + n - cut) if p + n > cut else b"")
    with Client(gpu_agent.socket) as c:
        # Across the two allocations: one read each, one registration each.
        off, n = GRANULARITY - 1000, 5000
        res = c.read_into(DevArray(base + off, n), blockd.addr, "odd", offset=3)
        assert res.ok and res.fetched_bytes == n and res.verified
        assert dtoh(base + off, n) == want[3:3 + n]
        assert sorted((r.kind, r.base - base) for r in c._device_regions.values()) == \
            [("cuda-vmm-fd", 0), ("cuda-vmm-fd", GRANULARITY)]
        big = blockd.files["big"]
        c.read_into(DevArray(base, 2 * GRANULARITY), blockd.addr, "big", offset=11)
        assert dtoh(base, 2 * GRANULARITY) == big[11:11 + 2 * GRANULARITY]
        assert len(c._device_regions) == 2
    # The agent kept no fd of the application's.
    assert not [t for t in gpu_agent.fd_targets() if "fakecuda-vmm" in t]


def test_cuda_refused(gpu_agent, blockd, cuda):
    with Client(gpu_agent.socket) as c:
        p = cuda.alloc(4096)
        handle = cuda.ipc_handle(p)
        cuda.free(p)
        for msg, code in [
            ({"ipc_handle": handle.hex(), "device": 0}, "import"),  # freed memory
            ({"ipc_handle": "zz" * 64, "device": 0}, "bad-message"),
            ({"ipc_handle": handle.hex()[:-2], "device": 0}, "bad-message"),
            ({"ipc_handle": handle.hex(), "device": 5}, "device"),  # no such GPU
        ]:
            with pytest.raises(BlockxferError) as e:
                c._call(dict(op="register", kind="cuda-ipc", size=4096, **msg))
            assert e.value.code == code, e.value
        # Memory the driver does not know.
        with pytest.raises(BlockxferError) as e:
            c.read_into(DevArray(12345, 10), blockd.addr, "odd")
        assert e.value.code == "cuda" and "cuMemGetAddressRange" in e.value.message
        # Still served.
        q = cuda.alloc(4096)
        c.read_into(DevArray(q, 4096), blockd.addr, "small")
        assert cuda.dtoh(q, 4096) == blockd.files["small"][:4096]


KILLED_APP = r"""
import ctypes, sys, time
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[4])
from blockxfer import Client
from fakecuda import Cuda
cuda = Cuda(sys.argv[5])
n = 96 << 20
p = cuda.alloc(n)
c = Client(sys.argv[2])
(reg, off, _), = c._device_pieces(p, n, 0)
c.submit_many([dict(server=sys.argv[3], volume="big", offset=i << 22, length=1 << 22, buffer=reg,
                    dst_offset=i << 22) for i in range(24)] * 4)
print(cuda.ipc_handle(p).hex(), flush=True)
time.sleep(60)
"""


def _holders(agent, ino):
    """The agent's plugin processes' mappings and fds of the memfd ino."""
    n = 0
    for pid in agent.children():
        try:
            with open("/proc/%d/maps" % pid) as f:
                n += sum(1 for line in f if len(line.split()) > 4 and line.split()[4] == str(ino))
            for fd in os.listdir("/proc/%d/fd" % pid):
                try:
                    n += os.stat("/proc/%d/fd/%s" % (pid, fd)).st_ino == ino
                except OSError:
                    pass
        except OSError:
            pass
    return n


def test_cuda_client_killed_mid_read(gpu_agent, blockd, cuda):
    # Load the plugin first, so its fds are in the baseline.
    with Client(gpu_agent.socket) as c:
        q = cuda.alloc(4096)
        c.read_into(DevArray(q, 4096), blockd.addr, "small")
    before = set(gpu_agent.fd_targets())
    app = subprocess.Popen([sys.executable, "-c", KILLED_APP, os.path.join(os.path.dirname(blockxfer.__file__), ".."),
                            gpu_agent.socket, blockd.addr, os.path.dirname(__file__),
                            os.environ["BLOCKXFER_LIBCUDA"]], stdout=subprocess.PIPE)
    handle = bytes.fromhex(app.stdout.readline().decode().strip())
    _, _, _, ino, size = struct.unpack_from("<8siiQQ", handle)
    assert size == 96 << 20
    assert _holders(gpu_agent, ino) >= 1, "the plugin does not hold the application's memory"
    app.send_signal(signal.SIGKILL)
    app.wait()
    app.stdout.close()
    deadline = time.monotonic() + 20
    while _holders(gpu_agent, ino) > 0:
        assert time.monotonic() < deadline, "the killed application's device memory is still imported"
        time.sleep(0.02)
    while not set(gpu_agent.fd_targets()) <= before:
        assert time.monotonic() < deadline, "the agent kept the killed application's fds"
        time.sleep(0.02)
    with open(gpu_agent.log) as f:
        assert "released the registrations of a disconnected application" in f.read()
    # And it still serves device memory.
    with Client(gpu_agent.socket) as c:
        c.read_into(DevArray(q, 4096), blockd.addr, "small")
        assert cuda.dtoh(q, 4096) == blockd.files["small"][:4096]


class _FakeTensor:
    """What load_safetensors needs of a CUDA torch tensor."""

    def __init__(self, ptr, shape, dtype, itemsize):
        self.shape, self.dtype, self.ptr = tuple(shape), dtype, ptr
        self.nbytes = int(np.prod(shape, dtype=np.int64)) * itemsize
        self.__cuda_array_interface__ = {"data": (ptr, False), "shape": self.shape,
                                         "typestr": "|u%d" % itemsize, "strides": None, "version": 3}


class FakeTorch:
    """torch.empty on "cuda:0" as the caching allocator does it: tensors
    carved out of one cuMemAlloc segment, 512-byte aligned."""

    def __init__(self, cuda):
        self.cuda, self.pool, self.used = cuda, cuda.alloc(1 << 20), 0
        self.calls = []
        for _, (size, _, name) in _safetensors.DTYPES.items():
            setattr(self, name, (name, size))

    def empty(self, shape, dtype, device):
        self.calls.append(device)
        t = _FakeTensor(self.pool + self.used, shape, dtype[0], dtype[1])
        self.used += (t.nbytes + 511) // 512 * 512
        return t


def test_load_safetensors_cuda_straight(gpu_agent, blockd, cuda, monkeypatch):
    fake = FakeTorch(cuda)
    monkeypatch.setattr(_safetensors, "_torch", fake)
    want = safetensors_volumes()["model.safetensors"]
    with Client(gpu_agent.socket) as c:
        got, meta = c.load_safetensors(blockd.addr, "model.safetensors", device="cuda:0", with_metadata=True)
        assert meta == {"format": "pt", "source": "model.safetensors"}
        assert set(got) == set(want) and set(fake.calls) == {"cuda:0"}
        for name, w in want.items():
            t = got[name]
            assert t.shape == w.shape, name
            assert cuda.dtoh(t.ptr, t.nbytes) == np.ascontiguousarray(w).tobytes(), name
        assert got["bf16"].dtype == "bfloat16" and got["ids"].dtype == "int64"
        # One segment: one registration, no host staging buffer.
        assert len(c._device_regions) == 1 and c._buffers == []


torch = None
try:
    import torch
except ImportError:
    pass


@pytest.mark.skipif(torch is None or not torch.cuda.is_available(), reason="needs torch with a CUDA GPU")
def test_torch_cuda(real_gpu_agent, blockd):
    want = blockd.files["odd"]
    with Client(real_gpu_agent.socket) as c:
        t = torch.empty(1 << 20, dtype=torch.uint8, device="cuda:0")
        assert c.read_into(t, blockd.addr, "odd", offset=9).ok
        assert t.cpu().numpy().tobytes() == want[9:9 + (1 << 20)]
        got = c.load_safetensors(blockd.addr, "model.safetensors", device="cuda:0")
        cpu = c.load_safetensors(blockd.addr, "model.safetensors")
        for name, v in cpu.items():
            assert got[name].device.type == "cuda" and torch.equal(got[name].cpu(), v), name
