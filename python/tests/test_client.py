"""The Python client against real blockd and blockcat agent processes."""

import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import blockxfer
from blockxfer import AgentGoneError, BlockxferError, Client

np = pytest.importorskip("numpy")
try:
    import torch
except ImportError:
    torch = None

from conftest import Blockd  # noqa: E402
from volumes import safetensors_volumes  # noqa: E402


def eventually(what, cond, timeout=20):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for " + what)
        time.sleep(0.02)


def test_read_bytes(agent, blockd):
    with Client(agent.socket) as c:
        assert c.hello["version"] == 1
        for name in ("small", "odd"):
            assert c.read(blockd.addr, name) == blockd.files[name]
        want = blockd.files["odd"]
        assert c.read(blockd.addr, "odd", offset=1_000_003, length=77_777) == want[1_000_003:1_000_003 + 77_777]
        assert c.read(blockd.addr, "odd", offset=len(want) - 5) == want[-5:]
        assert c.read(blockd.addr, "odd", offset=len(want)) == b""
        st = c.stat(blockd.addr, "odd")
        assert st["size_bytes"] == len(want) and st["generation"] >= 1


def test_read_into_numpy(agent, blockd):
    want = np.frombuffer(blockd.files["odd"], dtype=np.uint8)
    with Client(agent.socket) as c:
        # Registered memory: filled in place.
        zc = c.empty((len(want) // 4,), np.float32)
        res = c.read_into(zc, blockd.addr, "odd")
        assert res.ok and res.state == "done" and res.fetched_bytes == zc.nbytes
        assert res.transport == "tcp" and res.verified and res.unverified_extents == 0
        assert res.verified_extents >= 1 and res.reconnects == 0 and res.seconds > 0
        assert "fallback_reason" in res.as_dict() and res.error is None
        assert np.array_equal(zc.view(np.uint8), want[:zc.nbytes])
        # A piece of registered memory, from an offset of the volume.
        part = zc[1000:2000]
        c.read_into(part, blockd.addr, "odd", offset=8)
        assert np.array_equal(part.view(np.uint8), want[8:8 + 4000])
        # Plain numpy memory: through a registered buffer and a copy.
        plain = np.empty((3, 1000), dtype=np.int64)
        c.read_into(plain, blockd.addr, "odd", offset=4096)
        assert np.array_equal(plain.reshape(-1).view(np.uint8), want[4096:4096 + plain.nbytes])
        with pytest.raises(ValueError):
            c.read_into(plain[:, ::2], blockd.addr, "odd")


@pytest.mark.skipif(torch is None, reason="torch is not installed (apt-get install python3-torch)")
def test_read_into_torch(agent, blockd):
    want = blockd.files["odd"]
    with Client(agent.socket) as c:
        t = torch.empty(1000, dtype=torch.float32)
        res = c.read_into(t, blockd.addr, "odd", offset=12)
        assert res.ok and t.numpy().tobytes() == want[12:4012]  # bytes: random floats hold NaNs
        big = torch.empty((4, 1000), dtype=torch.int64)
        c.read_into(big, blockd.addr, "odd", offset=100)
        assert big.numpy().tobytes() == want[100:100 + 32000]
        with pytest.raises(ValueError):
            c.read_into(big.t(), blockd.addr, "odd")


def test_submit_wait_cancel(agent, blockd):
    want = blockd.files["big"]
    with Client(agent.socket) as c:
        buf = c.alloc(len(want))
        h = c.submit(blockd.addr, "big", 0, 1 << 20, buf, dst_offset=5, tag="first")
        r = h.wait(timeout=30)
        assert r.tag == "first" and h.result is r and h.done()
        assert bytes(buf.view[5:5 + (1 << 20)]) == want[:1 << 20]
        # Many reads, cancelled at once: each ends cancelled or done,
        # and those done hold the right bytes.
        chunk = 4 << 20
        hs = c.submit_many([dict(server=blockd.addr, volume="big", offset=i * chunk, length=chunk,
                                 buffer=buf, dst_offset=i * chunk, tag=str(i))
                            for i in range(len(want) // chunk)])
        for h in hs:
            h.cancel()
        states = {}
        for h in hs:
            try:
                res = h.wait(timeout=30)
                states.setdefault("done", []).append(int(h.tag))
                assert res.fetched_bytes == chunk
            except BlockxferError as e:
                assert e.code == "cancelled" and e.result.state == "cancelled", e
                states.setdefault("cancelled", []).append(int(h.tag))
        assert states.get("cancelled"), "no read was cancelled: %s" % states
        for i in states.get("done", []):
            assert bytes(buf.view[i * chunk:(i + 1) * chunk]) == want[i * chunk:(i + 1) * chunk]
        # wait with a timeout on a read still running, then it completes.
        h = c.submit(blockd.addr, "big", 0, len(want), buf)
        try:
            h.wait(timeout=0)
        except TimeoutError:
            pass
        assert h.wait(timeout=60).fetched_bytes == len(want)
        assert bytes(buf.view) == want
        buf.close()


def test_errors(agent, blockd, bins):
    with Client(agent.socket) as c:
        with pytest.raises(BlockxferError) as e:
            c.read(blockd.addr, "no-such-volume", length=10)
        assert e.value.code == "not-found" and "no-such-volume" in e.value.message
        with pytest.raises(BlockxferError) as e:
            c.stat(blockd.addr, "no-such-volume")
        assert e.value.code == "not-found"
        size = len(blockd.files["small"])
        with pytest.raises(BlockxferError) as e:
            c.read(blockd.addr, "small", offset=size - 10, length=20)
        assert e.value.code == "out-of-range", e.value
        with pytest.raises(BlockxferError) as e:
            c.read("127.0.0.1:1", "small", length=10)
        assert e.value.code == "unavailable", e.value
        with pytest.raises(BlockxferError) as e:
            c._call({"op": "unregister", "handle": 12345})
        assert e.value.code == "unknown-handle"
        # The connection still serves.
        assert c.read(blockd.addr, "small", length=10) == blockd.files["small"][:10]
    agent.stop()
    with pytest.raises(AgentGoneError):
        Client(agent.socket)


def test_agent_gone_mid_session(agent, blockd):
    c = Client(agent.socket)
    assert c.read(blockd.addr, "small", length=100) == blockd.files["small"][:100]
    agent.proc.kill()
    agent.proc.wait()
    with pytest.raises(AgentGoneError) as e:
        c.read(blockd.addr, "small", length=100)
    assert e.value.code == "agent-gone"
    c.close()


def test_bad_input_refused(agent, blockd):
    good = Client(agent.socket)
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    raw.connect(agent.socket)

    def ask(data, fds=()):
        if fds:
            socket.send_fds(raw, [data], list(fds))
        else:
            raw.send(data)
        return json.loads(raw.recv(1 << 17))

    r = ask(b"\x00garbage\xff")
    assert not r["ok"] and r["error"]["code"] == "bad-message"
    r = ask(b" " * (70 << 10))
    assert not r["ok"] and r["error"]["code"] == "too-large"
    r = ask(json.dumps({"op": "hello", "seq": 3, "version": 1}).encode(), fds=[os.open("/dev/null", os.O_RDONLY)])
    assert not r["ok"] and r["error"]["code"] == "unexpected-fd" and r["seq"] == 3
    r = ask(json.dumps({"op": "hello", "seq": 4, "version": 1}).encode())
    assert r["ok"] and r["seq"] == 4
    # The others are served meanwhile.
    assert good.read(blockd.addr, "small", length=1000) == blockd.files["small"][:1000]
    raw.close()
    good.close()


def test_two_clients(agent, blockd):
    errors = []

    def run(name, seed):
        try:
            with Client(agent.socket, name=name) as c:
                want = blockd.files["odd"]
                for i in range(5):
                    off = (seed * 7919 + i * 104729) % (len(want) - 65536)
                    arr = c.empty((65536,), np.uint8)
                    c.read_into(arr, blockd.addr, "odd", offset=off)
                    assert arr.tobytes() == want[off:off + 65536]
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=run, args=("app%d" % i, i)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors


KILLED_APP = r"""
import sys
sys.path.insert(0, sys.argv[1])
from blockxfer import Client
c = Client(sys.argv[2])
buf = c.alloc(96 << 20)
other = c.alloc(1 << 20)
hs = c.submit_many([dict(server=sys.argv[3], volume="big", offset=i << 22, length=1 << 22,
                         buffer=buf, dst_offset=i << 22) for i in range(24)] * 4)
print("submitted", flush=True)
import time
time.sleep(60)
"""


def test_client_killed_mid_read(agent, blockd):
    # Warm the session first, so its sockets are in the baseline.
    with Client(agent.socket) as c:
        c.read(blockd.addr, "small", length=10)
    eventually("the warm-up client to be released", lambda: agent.memfd_mappings() == 0)
    # The agent's fds (socket inodes included) before the application: the
    # session's sockets stay, the application's may not.
    before = set(agent.fd_targets())
    app = subprocess.Popen([sys.executable, "-c", KILLED_APP, os.path.join(os.path.dirname(blockxfer.__file__), ".."),
                            agent.socket, blockd.addr], stdout=subprocess.PIPE)
    assert app.stdout.readline().strip() == b"submitted"
    assert agent.memfd_mappings() == 2
    assert len(set(agent.fd_targets()) - before) >= 1  # its connection
    app.send_signal(signal.SIGKILL)
    app.wait()
    app.stdout.close()
    eventually("the agent to release the killed application's memory", lambda: agent.memfd_mappings() == 0)
    eventually("the agent to close the killed application's fds", lambda: set(agent.fd_targets()) <= before)
    # And it still serves.
    with Client(agent.socket) as c:
        assert c.read(blockd.addr, "small", length=10) == blockd.files["small"][:10]
    assert agent.proc.poll() is None


def _same(a, b):
    if torch is not None and isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16:
        return tuple(a.shape) == b.shape and np.array_equal(a.view(torch.int16).numpy().view(np.uint16), b)
    if torch is not None and isinstance(a, torch.Tensor):
        b = torch.from_numpy(np.array(b))  # (ascontiguousarray makes a 0-d array 1-d)
        return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)


def test_load_safetensors(agent, blockd):
    want = safetensors_volumes()["model.safetensors"]
    with Client(agent.socket) as c:
        got, meta = c.load_safetensors(blockd.addr, "model.safetensors", with_metadata=True)
        assert meta == {"format": "pt", "source": "model.safetensors"}
        assert set(got) == set(want)
        if torch is not None:
            assert isinstance(got["embed.weight"], torch.Tensor) and got["bf16"].dtype == torch.bfloat16
            assert float(got["bf16"][0, 0]) == 1.0 and float(got["bf16"][0, 1]) == -2.0
        else:
            assert isinstance(got["embed.weight"], np.ndarray) and got["bf16"].dtype == np.uint16
        for name, w in want.items():
            assert _same(got[name], w), name
        # Element by element, for one of them.
        g, w = got["layer.0.bias"], want["layer.0.bias"]
        for i in range(len(w)):
            assert float(g[i]) == float(w[i])
        assert tuple(got["empty"].shape) == (0, 4)
        assert tuple(got["scalar"].shape) == ()
        only = c.load_safetensors(blockd.addr, "st-empty-only")
        assert tuple(only["nothing"].shape) == (0, 4)
        with pytest.raises(BlockxferError) as e:
            c.load_safetensors(blockd.addr, "small")  # not a safetensors file
        assert e.value.code == "bad-safetensors"


def test_load_safetensors_tensors_outlive_the_load(agent, blockd):
    # The loaded tensors view the mapping the data was read into: it must
    # stay mapped as long as they do, also when no numpy array views it.
    want = safetensors_volumes()["floats.safetensors"]
    with Client(agent.socket) as c:
        got = c.load_safetensors(blockd.addr, "floats.safetensors")
    gc.collect()
    junk = [bytearray(1 << 20) for _ in range(64)]  # reuse what was freed
    for name, w in want.items():
        assert _same(got[name], w), name
    del junk


def test_server_gone(agent, blockd, bins, tmp_path):
    # A second blockd with the same key, stopped under a warm session.
    data = str(tmp_path)
    src = os.path.join(data, "src.bin")
    with open(src, "wb") as f:
        f.write(blockd.files["small"])
    subprocess.run([os.path.join(bins, "blockd"), "volume", "import", "v", src, "--data", data],
                   check=True, capture_output=True)
    shutil.copy(blockd.key, os.path.join(data, "blockd.key"))  # DATA/blockd.key: blockd serve's key
    os.chmod(os.path.join(data, "blockd.key"), 0o600)
    other = Blockd(bins, data, blockd.key)
    other.start()
    try:
        with Client(agent.socket) as c:
            assert c.read(other.addr, "v", length=100) == blockd.files["small"][:100]
            other.stop()
            with pytest.raises(BlockxferError) as e:
                c.read(other.addr, "v", offset=0, length=100)
            assert e.value.code == "unavailable", e.value
            # The agent still serves the other server.
            assert c.read(blockd.addr, "small", length=10) == blockd.files["small"][:10]
    finally:
        other.stop()
