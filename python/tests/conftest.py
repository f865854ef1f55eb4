"""Fixtures: real blockd and `blockcat agent` processes.

The binaries are built with `go build` into a temporary directory, unless
$BLOCKXFER_BIN names a directory holding blockd and blockcat already.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "python"))

from safetensors_writer import write_safetensors  # noqa: E402
import volumes  # noqa: E402


@pytest.fixture(scope="session")
def bins(tmp_path_factory):
    given = os.environ.get("BLOCKXFER_BIN")
    if given:
        return given
    if shutil.which("go") is None:
        pytest.skip("go is not installed: cannot build blockd and blockcat")
    out = str(tmp_path_factory.mktemp("bin"))
    subprocess.run(["go", "build", "-o", out + "/", "./cmd/blockd", "./cmd/blockcat"], cwd=REPO, check=True)
    return out


class Blockd:
    def __init__(self, bins, data, key):
        self.bins, self.data, self.key = bins, data, key
        self.proc = None
        self.addr = None

    def start(self):
        ready = os.path.join(self.data, "ready")
        if os.path.exists(ready):
            os.unlink(ready)
        os.mkfifo(ready)
        fd = os.open(ready, os.O_RDWR)  # does not wait for the writer
        self.proc = subprocess.Popen(
            [os.path.join(self.bins, "blockd"), "serve", "--data", self.data, "--listen", "127.0.0.1:0",
             "--ready-file", ready],
            stderr=open(os.path.join(self.data, "blockd.log"), "ab"))
        with os.fdopen(fd, "rb", buffering=0) as f:
            line = b""
            while not line.endswith(b"\n"):
                ch = f.read(1)
                if not ch:
                    break
                line += ch
        self.addr = line.decode().strip()
        assert self.addr, "blockd did not become ready"

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="session")
def blockd(bins, tmp_path_factory):
    """A blockd serving the volumes of tests/volumes.py; .files maps each
    volume to its bytes."""
    data = str(tmp_path_factory.mktemp("blockd"))
    key = os.path.join(data, "blockd.key")
    subprocess.run([os.path.join(bins, "blockd"), "keygen", "-o", key], check=True, capture_output=True)
    srcdir = str(tmp_path_factory.mktemp("src"))
    files = {}
    for name, content in volumes.random_volumes().items():
        files[name] = content
    for name, tensors in volumes.safetensors_volumes().items():
        files[name] = write_safetensors(tensors, metadata={"format": "pt", "source": name},
                                        raw_dtypes=volumes.RAW_DTYPES)
    files["st-empty-only"] = write_safetensors({"nothing": volumes.empty_tensor()}, metadata=None)
    for name, content in files.items():
        path = os.path.join(srcdir, name)
        with open(path, "wb") as f:
            f.write(content)
        subprocess.run([os.path.join(bins, "blockd"), "volume", "import", name, path, "--data", data],
                       check=True, capture_output=True)
    b = Blockd(bins, data, key)
    b.files = files
    b.start()
    yield b
    b.stop()


class Agent:
    def __init__(self, bins, key, workdir, args=(), env=None):
        self.socket = os.path.join(workdir, "agent.sock")
        self.log = os.path.join(workdir, "agent.log")
        self.proc = subprocess.Popen(
            [os.path.join(bins, "blockcat"), "agent", "--socket", self.socket, "--key-file", key,
             "--log-level", "debug", "--data-conns", "2"] + list(args),
            stderr=open(self.log, "ab"), env=dict(os.environ, **(env or {})))
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("blockcat agent exited: %s" % open(self.log).read())
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                s.connect(self.socket)
                s.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("blockcat agent did not start listening")
                time.sleep(0.02)

    @property
    def pid(self):
        return self.proc.pid

    def fd_targets(self):
        out = []
        for fd in os.listdir("/proc/%d/fd" % self.pid):
            try:
                out.append(os.readlink("/proc/%d/fd/%s" % (self.pid, fd)))
            except OSError:
                pass
        return sorted(out)

    def children(self):
        """The pids of the agent's child processes (its provider plugins)."""
        pids = []
        for task in os.listdir("/proc/%d/task" % self.pid):
            try:
                with open("/proc/%d/task/%s/children" % (self.pid, task)) as f:
                    pids += [int(p) for p in f.read().split()]
            except OSError:
                pass
        return pids

    def memfd_mappings(self):
        with open("/proc/%d/maps" % self.pid) as f:
            return sum(1 for line in f if "memfd:blockxfer-py" in line)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def gpu_plugins(bins, tmp_path_factory):
    """A directory holding the gpu provider plugin: the one in
    $BLOCKXFER_BIN, else built here."""
    if os.path.exists(os.path.join(bins, "blockxfer-provider-gpu")):
        return bins
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed: cannot build the gpu provider plugin (cgo)")
    out = str(tmp_path_factory.mktemp("plugins"))
    subprocess.run(["go", "build", "-o", os.path.join(out, "blockxfer-provider-gpu"), "./providers/gpu"],
                   cwd=REPO, check=True)
    return out


@pytest.fixture(scope="session")
def fakecuda(gpu_plugins, tmp_path_factory):
    """(libfakecuda.so, plugin dir): the stand-in CUDA driver built from
    providers/gpu/testdata/fakecuda.c, and a directory holding the gpu
    provider plugin."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed: cannot build the stand-in CUDA driver")
    out = str(tmp_path_factory.mktemp("fakecuda"))
    lib = os.path.join(out, "libfakecuda.so")
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", lib,
                    os.path.join(REPO, "providers", "gpu", "testdata", "fakecuda.c")], check=True)
    return lib, gpu_plugins


@pytest.fixture
def gpu_agent(bins, blockd, fakecuda, monkeypatch):
    """An agent serving device memory through the gpu provider plugin on
    the stand-in driver, which this process loads too
    ($BLOCKXFER_LIBCUDA)."""
    lib, plugins = fakecuda
    monkeypatch.setenv("BLOCKXFER_LIBCUDA", lib)
    workdir = tempfile.mkdtemp(prefix="bxagent")
    a = Agent(bins, blockd.key, workdir, args=["--plugin-dir", plugins], env={"BLOCKXFER_LIBCUDA": lib})
    yield a
    a.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def real_gpu_agent(bins, blockd, gpu_plugins):
    """An agent serving device memory through the gpu provider plugin on
    the machine's own CUDA driver (libcuda.so.1, or $BLOCKXFER_LIBCUDA)."""
    workdir = tempfile.mkdtemp(prefix="bxagent")
    a = Agent(bins, blockd.key, workdir, args=["--plugin-dir", gpu_plugins])
    yield a
    a.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def agent(bins, blockd):
    workdir = tempfile.mkdtemp(prefix="bxagent")
    a = Agent(bins, blockd.key, workdir)
    yield a
    a.stop()
    shutil.rmtree(workdir, ignore_errors=True)
