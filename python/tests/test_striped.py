"""Striped (erasure-coded) volumes through the agent: a server of None
names a volume of the agent's cluster catalog (blockcat agent --etcd)."""

import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from blockxfer import BlockxferError, Client

np = pytest.importorskip("numpy")

from conftest import Agent, Blockd  # noqa: E402
from fakecuda import Cuda, DevArray  # noqa: E402
from test_client import _same  # noqa: E402
from volumes import safetensors_volumes  # noqa: E402


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def etcd(tmp_path):
    exe = shutil.which("etcd")
    if exe is None:
        pytest.skip("needs the etcd binary (apt-get install etcd-server)")
    client = "http://127.0.0.1:%d" % _free_port()
    peer = "http://127.0.0.1:%d" % _free_port()
    log = str(tmp_path / "etcd.log")
    proc = subprocess.Popen([exe, "--name", "t", "--data-dir", str(tmp_path / "etcd"),
                             "--listen-client-urls", client, "--advertise-client-urls", client,
                             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                             "--initial-cluster", "t=" + peer], stderr=open(log, "wb"))
    deadline = time.monotonic() + 30
    while "ready to serve client requests" not in open(log, errors="replace").read():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("etcd did not start: %s" % open(log, errors="replace").read()[-2000:])
        time.sleep(0.05)
    yield client[len("http://"):]
    proc.kill()
    proc.wait()


@pytest.fixture
def striped(bins, blockd, etcd, fakecuda, monkeypatch, tmp_path):
    """Three blockd holding the volumes "stv" (the bytes of "odd") and
    "stm" (model.safetensors) as 2+1 striped volumes in etcd, and an agent
    serving them, and device memory on the stand-in driver."""
    servers = []
    for i in range(3):
        data = str(tmp_path / ("blockd%d" % i))
        os.mkdir(data)
        shutil.copy(blockd.key, os.path.join(data, "blockd.key"))
        os.chmod(os.path.join(data, "blockd.key"), 0o600)
        b = Blockd(bins, data, blockd.key)
        b.start()
        servers.append(b)
    for name, src in (("stv", "odd"), ("stm", "model.safetensors")):
        path = str(tmp_path / name)
        with open(path, "wb") as f:
            f.write(blockd.files[src])
        subprocess.run([os.path.join(bins, "blockcat"), "put", path, "--name", name, "--ec", "2+1",
                        "--unit", "65536", "--peers", ",".join(b.addr for b in servers), "--etcd", etcd],
                       check=True, capture_output=True, env=dict(os.environ, BLOCKXFER_KEY_FILE=blockd.key))
    lib, plugins = fakecuda
    monkeypatch.setenv("BLOCKXFER_LIBCUDA", lib)
    workdir = tempfile.mkdtemp(prefix="bxagent")
    a = Agent(bins, blockd.key, workdir, args=["--etcd", etcd, "--plugin-dir", plugins],
              env={"BLOCKXFER_LIBCUDA": lib})
    yield a, servers
    a.stop()
    for b in servers:
        b.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def test_striped_reads(striped, blockd):
    agent, servers = striped
    want = blockd.files["odd"]
    cuda = Cuda(os.environ["BLOCKXFER_LIBCUDA"])
    with Client(agent.socket) as c:
        st = c.stat(None, "stv")
        assert st["striped"] and st["size_bytes"] == len(want) and st["k"] == 2 and st["m"] == 1
        assert c.read(None, "stv") == want
        arr = c.empty((100000,), np.uint8)
        res = c.read_into(arr, None, "stv", offset=12345)
        assert res.striped and res.stripes >= 1 and res.degraded_stripes == 0 and res.server == ""
        assert arr.tobytes() == want[12345:112345]
        # Into device memory.
        p = cuda.alloc(1 << 20)
        c.read_into(DevArray(p, 1 << 20), None, "stv", offset=7)
        assert cuda.dtoh(p, 1 << 20) == want[7:7 + (1 << 20)]
        # A safetensors file stored striped.
        got = c.load_safetensors(None, "stm")
        for name, w in safetensors_volumes()["model.safetensors"].items():
            assert _same(got[name], w), name
        # One server gone: its shards are rebuilt from parity.
        servers[0].stop()
        res = c.read_into(arr, None, "stv")
        assert res.ok and res.degraded_stripes > 0 and arr.tobytes() == want[:100000]
        with pytest.raises(BlockxferError) as e:
            c.read(None, "no-such-striped-volume", length=10)
        assert e.value.code == "not-found", e.value
