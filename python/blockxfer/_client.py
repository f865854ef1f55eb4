"""The agent client: connection, registered memory, reads, safetensors."""

import ctypes
import fcntl
import json
import math
import mmap
import os
import socket
import threading
import time

try:  # optional
    import numpy as _np
except ImportError:  # pragma: no cover - exercised where numpy is missing
    _np = None

PROTOCOL_VERSION = 1
MAX_MESSAGE = 64 << 10
MAX_READS_PER_SUBMIT = 256
MAX_IDS_PER_WAIT = 64
DEFAULT_SOCKET = os.environ.get("BLOCKXFER_AGENT_SOCKET", "/run/blockxfer/agent.sock")
# A wait blocks the connection; waits are sent in slices of this many
# milliseconds so that other threads' calls (cancel) get their turn.
_WAIT_SLICE_MS = 250


class BlockxferError(Exception):
    """An error of the agent or the engine: ``code`` is its name (such as
    ``not-found``, ``out-of-range``, ``cancelled``, ``unavailable``; see
    docs/agent-protocol.md), ``message`` says what happened. ``result`` is
    the read's Result when the error ended a read."""

    def __init__(self, code, message, result=None):
        super().__init__("%s: %s" % (code, message))
        self.code = code
        self.message = message
        self.result = result


class AgentGoneError(BlockxferError, ConnectionError):
    """The agent closed the connection or cannot be reached."""

    def __init__(self, message):
        super().__init__("agent-gone", message)


class Result:
    """The completion of one read (docs/agent-protocol.md section 5). The
    keys of the completion are attributes: ``state``, ``fetched_bytes``,
    ``transport``, ``fallback_reason``, ``verified``, ``verified_extents``,
    ``unverified_extents``, ``reconnects``, ``seconds``, ... ``error`` is
    None or a BlockxferError."""

    def __init__(self, completion):
        self._c = dict(completion)
        err = self._c.get("error")
        self.error = BlockxferError(err["code"], err["message"], self) if err else None

    def __getattr__(self, name):
        try:
            return self._c[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def ok(self):
        return self._c.get("state") == "done"

    def as_dict(self):
        """The completion as the agent sent it."""
        return dict(self._c)

    def __repr__(self):
        return "Result(%s)" % ", ".join("%s=%r" % kv for kv in sorted(self._c.items()))


class Buffer:
    """Host memory the agent writes into: a sealed memfd, mapped here and
    registered with the agent. ``view`` is a writable memoryview of it. Close
    it (or the client) to unregister it; the mapping stays valid while
    arrays made from it are alive."""

    def __init__(self, client, size, name="blockxfer-py"):
        self.size = size
        fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, size)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
            self.mmap = mmap.mmap(fd, size)
            reply = client._call({"op": "register", "kind": "fd", "size": size, "offset": 0}, fds=[fd])
        finally:
            os.close(fd)
        self.handle = reply["handle"]
        self._client = client
        self._c = (ctypes.c_char * size).from_buffer(self.mmap)
        self.address = ctypes.addressof(self._c)
        self.view = memoryview(self.mmap)

    def contains(self, address, nbytes):
        """The offset of [address, address+nbytes) in the buffer, or None."""
        if self.address <= address and address + nbytes <= self.address + self.size:
            return address - self.address
        return None

    def close(self):
        """Unregister the buffer (reads into it are cancelled first)."""
        client, self._client = self._client, None
        if client is None:
            return
        client._forget(self)
        try:
            client._call({"op": "unregister", "handle": self.handle})
        except AgentGoneError:
            pass
        self.view.release()
        self._c = None
        try:
            self.mmap.close()
        except BufferError:
            pass  # arrays still use it: it is unmapped when they are gone

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Handle:
    """A submitted read. ``wait(timeout)`` returns its Result (raising
    BlockxferError if it did not complete, TimeoutError if it is still
    running after timeout seconds), ``cancel()`` cancels it, ``result`` is
    its Result once it ended (else None)."""

    def __init__(self, client, read_id, tag, on_done=None):
        self._client = client
        self.id = read_id
        self.tag = tag
        self._result = None
        self._on_done = on_done

    @property
    def result(self):
        if self._result is None:
            self._client._collect([self], 0)
        return self._result

    def done(self):
        """True once the read has ended."""
        return self.result is not None

    def wait(self, timeout=None):
        self._client._collect([self], timeout)
        if self._result is None:
            raise TimeoutError("read %d still running after %ss" % (self.id, timeout))
        if self._result.error is not None:
            raise self._result.error
        return self._result

    def cancel(self):
        """Cancel the read; its result then says cancelled (unless it had
        already ended)."""
        if self._result is None:
            try:
                self._client._call({"op": "cancel", "ids": [self.id]})
            except BlockxferError as e:
                if e.code != "unknown-read":  # collected meanwhile
                    raise

    def _set(self, result):
        self._result = result
        if self._on_done is not None:
            self._on_done(self)


def _where(server, msg):
    """msg naming server, or a striped volume when server is None."""
    if server is None:
        msg["striped"] = True
    else:
        msg["server"] = server
    return msg


class DeviceRegion:
    """A CUDA allocation registered with the agent (kind ``cuda-ipc`` or
    ``cuda-vmm-fd``): ``handle`` names it in reads (``buffer=`` of submit),
    ``base`` and ``size`` are its device address range, ``device`` its
    GPU. The client registers one per allocation on first use and keeps it
    until ``client.release_device_memory()`` or ``client.close()``."""

    def __init__(self, client, alloc):
        self.device, self.base, self.size, self.kind = alloc.device, alloc.base, alloc.size, alloc.kind
        self.key = alloc.key
        msg = {"op": "register", "kind": alloc.kind, "device": alloc.device, "offset": 0, "size": alloc.size}
        if alloc.kind == "cuda-ipc":
            msg["ipc_handle"] = alloc.ipc_handle.hex()
            reply = client._call(msg)
        else:
            fd = alloc.export_fd()
            try:
                reply = client._call(msg, fds=[fd])
            finally:
                os.close(fd)
        self.handle = reply["handle"]

    def __repr__(self):
        return "DeviceRegion(%s, cuda:%d, %#x+%d, handle %d)" % (self.kind, self.device, self.base, self.size, self.handle)


def _cuda_span(dst):
    """(address, nbytes, device) of dst if it is CUDA memory (a CUDA torch
    tensor, or an object with __cuda_array_interface__), else None. The
    device is None when dst does not say."""
    if type(dst).__module__.startswith("torch"):
        if dst.device.type != "cuda":
            return None
        if not dst.is_contiguous():
            raise ValueError("read_into: the tensor must be contiguous")
        dev = dst.device.index
        if dev is None:
            import torch

            dev = torch.cuda.current_device()
        return dst.data_ptr(), dst.numel() * dst.element_size(), dev
    try:
        cai = dst.__cuda_array_interface__
    except AttributeError:
        return None
    ptr, readonly = cai["data"]
    if readonly:
        raise ValueError("read_into: the device array is read-only")
    shape, typestr = tuple(cai["shape"]), cai["typestr"]
    itemsize = int(typestr[2:])
    strides = cai.get("strides")
    if strides is not None:
        want = []
        step = itemsize
        for d in reversed(shape):
            want.append(step)
            step *= d
        if tuple(reversed(want)) != tuple(strides) and math.prod(shape) > 1:
            raise ValueError("read_into: the device array must be C-contiguous")
    dev = getattr(dst, "device", None)
    dev = getattr(dev, "id", getattr(dev, "index", dev))
    return ptr, math.prod(shape) * itemsize, dev if isinstance(dev, int) else None


def _merge(results):
    """One Result for the pieces of one read_into (a range that spans
    allocations)."""
    if len(results) == 1:
        return results[0]
    c = results[0].as_dict()
    for k in ("fetched_bytes", "length_bytes", "verified_extents", "unverified_extents", "extents"):
        c[k] = sum(r.as_dict()[k] for r in results)
    for k in ("reconnects", "seconds", "max_extent_latency_seconds", "queued_seconds"):
        c[k] = max(r.as_dict()[k] for r in results)
    c["verified"] = all(r.verified for r in results)
    c["bytes_per_second"] = c["fetched_bytes"] / c["seconds"] if c["seconds"] > 0 else 0
    return Result(c)


def _dst_address(dst):
    """(address, nbytes) of a C-contiguous, writable numpy array, CPU torch
    tensor or writable buffer."""
    mod = type(dst).__module__
    if mod.startswith("torch"):
        if not dst.is_contiguous():
            raise ValueError("read_into: the tensor must be contiguous")
        return dst.data_ptr(), dst.numel() * dst.element_size()
    if _np is not None and isinstance(dst, _np.ndarray):
        if not dst.flags.c_contiguous or not dst.flags.writeable:
            raise ValueError("read_into: the array must be C-contiguous and writable")
        return dst.__array_interface__["data"][0], dst.nbytes
    mv = memoryview(dst)
    if mv.readonly or not mv.c_contiguous:
        raise ValueError("read_into: the buffer must be writable and contiguous")
    c = (ctypes.c_char * mv.nbytes).from_buffer(mv)
    return ctypes.addressof(c), mv.nbytes


class Client:
    """A connection to the agent. Thread-safe: calls are serialised."""

    def __init__(self, socket_path=None, name=None):
        self.socket_path = socket_path or DEFAULT_SOCKET
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._sock.connect(self.socket_path)
        except OSError as e:
            self._sock.close()
            raise AgentGoneError("cannot connect to the agent at %s: %s (is `blockcat agent` running?)"
                                 % (self.socket_path, e)) from e
        self._lock = threading.RLock()
        self._seq = 0
        self._pending = {}  # read id -> Handle
        self._buffers = []
        self._device_regions = {}  # (device, base) -> DeviceRegion
        self._closed = False
        self.hello = self._call({"op": "hello", "version": PROTOCOL_VERSION,
                                 "client": name or "python pid %d" % os.getpid()})

    # --- transport -------------------------------------------------------

    def _call(self, msg, fds=()):
        with self._lock:
            if self._closed:
                raise AgentGoneError("the client is closed")
            self._seq += 1
            msg["seq"] = self._seq
            data = json.dumps(msg, separators=(",", ":")).encode()
            if len(data) > MAX_MESSAGE:
                raise ValueError("request of %d bytes is over the %d-byte limit" % (len(data), MAX_MESSAGE))
            try:
                if fds:
                    socket.send_fds(self._sock, [data], list(fds))
                else:
                    self._sock.send(data)
                reply = self._sock.recv(MAX_MESSAGE)
            except OSError as e:
                raise AgentGoneError("connection to the agent lost: %s" % e) from e
            if not reply:
                raise AgentGoneError("the agent closed the connection")
            r = json.loads(reply)
            if r.get("seq") != self._seq:
                raise BlockxferError("protocol", "reply to request %r, expected %d" % (r.get("seq"), self._seq))
            if not r.get("ok"):
                err = r.get("error") or {}
                raise BlockxferError(err.get("code", "internal"), err.get("message", "no message"))
            return r

    def close(self):
        """Close the connection; the agent cancels its reads and releases its
        registrations."""
        with self._lock:
            if self._closed:
                return
            for b in list(self._buffers):
                b._client = None
                b.view.release()
                b._c = None
                try:
                    b.mmap.close()
                except BufferError:
                    pass
            self._buffers = []
            self._device_regions = {}
            self._closed = True
            self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- memory ------------------------------------------------------------

    def alloc(self, size):
        """A registered Buffer of size bytes (zeroed)."""
        if size <= 0:
            raise ValueError("alloc: size must be positive")
        b = Buffer(self, size)
        with self._lock:
            self._buffers.append(b)
        return b

    def _forget(self, buf):
        with self._lock:
            if buf in self._buffers:
                self._buffers.remove(buf)

    def empty(self, shape, dtype="uint8"):
        """A numpy array in registered memory: read_into fills it without a
        copy. The registration lasts as long as the client."""
        if _np is None:
            raise ImportError("blockxfer.Client.empty needs numpy")
        dt = _np.dtype(dtype)
        shape = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
        count = int(math.prod(shape))
        if count * dt.itemsize == 0:
            return _np.empty(shape, dt)
        buf = self.alloc(count * dt.itemsize)
        return _np.frombuffer(buf.mmap, dtype=dt, count=count).reshape(shape)

    def _device_pieces(self, address, nbytes, device):
        """[(DeviceRegion, dst_offset, length)] covering device memory
        [address, address+nbytes), in order: the allocations it lies in,
        registered on first use."""
        from . import _cuda

        drv = _cuda.driver()
        if device is None:
            device = drv.device_of(address)
            if device is None:
                device = 0
        pieces = []
        end = address + nbytes
        while address < end:
            alloc = drv.allocation(address, device)
            with self._lock:
                key = (device, alloc.base)
                reg = self._device_regions.get(key)
                if reg is not None and (reg.key != alloc.key or reg.size != alloc.size):
                    # Another allocation at the same address: the old one was freed.
                    self._unregister_device(key)
                    reg = None
                if reg is None:
                    reg = self._device_regions[key] = DeviceRegion(self, alloc)
            n = min(end, alloc.base + alloc.size) - address
            pieces.append((reg, address - alloc.base, n))
            address += n
        return pieces

    def _unregister_device(self, key):
        reg = self._device_regions.pop(key)
        try:
            self._call({"op": "unregister", "handle": reg.handle})
        except BlockxferError as e:
            if e.code not in ("unknown-handle", "agent-gone"):
                raise

    def release_device_memory(self):
        """Unregister every CUDA allocation registered by read_into or
        load_safetensors (reads into them are cancelled first). Call it
        before freeing device memory to the driver (torch.cuda.empty_cache)
        if the agent should not keep it mapped meanwhile."""
        with self._lock:
            for key in list(self._device_regions):
                self._unregister_device(key)

    def _region_of(self, address, nbytes):
        with self._lock:
            for b in self._buffers:
                off = b.contains(address, nbytes)
                if off is not None:
                    return b, off
        return None, None

    # --- reads ---------------------------------------------------------------

    def stat(self, server, volume):
        """The volume's size_bytes, extent_size_bytes and generation. A
        server of None names a striped volume of the agent's cluster
        catalog (so in every call that takes a server)."""
        return self._call(_where(server, {"op": "stat", "volume": volume}))

    def submit(self, server, volume, offset, length, buffer, dst_offset=0, tag="", timeout=None):
        """Start one read of [offset, offset+length) of volume into buffer
        (a Buffer, or a DeviceRegion) at dst_offset; returns its Handle."""
        return self.submit_many([dict(server=server, volume=volume, offset=offset, length=length,
                                      buffer=buffer, dst_offset=dst_offset, tag=tag, timeout=timeout)])[0]

    def submit_many(self, reads):
        """Start reads, each a dict of submit's arguments, in as few
        messages as the limits allow; returns their Handles in order."""
        handles = []
        for i in range(0, len(reads), MAX_READS_PER_SUBMIT):
            batch = []
            for r in reads[i:i + MAX_READS_PER_SUBMIT]:
                t = r.get("timeout")
                batch.append(_where(r["server"], {
                    "volume": r["volume"], "offset": int(r["offset"]), "length": int(r["length"]),
                    "handle": r["buffer"].handle, "dst_offset": int(r.get("dst_offset", 0)),
                    "tag": str(r.get("tag", "")), "timeout_ms": int(t * 1000) if t else 0}))
            with self._lock:
                reply = self._call({"op": "submit", "reads": batch})
                for rid, spec in zip(reply["ids"], batch):
                    h = Handle(self, rid, spec["tag"])
                    self._pending[rid] = h
                    handles.append(h)
        return handles

    def _collect(self, handles, timeout):
        """Collect completions of handles until all have ended or timeout
        seconds passed (None: no limit; 0: poll once)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        polled = False
        while True:
            with self._lock:
                left = [h for h in handles if h._result is None]
                if not left:
                    return
                if deadline is None:
                    ms = _WAIT_SLICE_MS
                else:
                    rem = deadline - time.monotonic()
                    if rem <= 0 and polled:
                        return
                    ms = max(0, min(_WAIT_SLICE_MS, int(rem * 1000)))
                ids = [h.id for h in left[:MAX_IDS_PER_WAIT]]
                reply = self._call({"op": "wait", "ids": ids, "timeout_ms": ms})
                polled = True
                for c in reply["completions"]:
                    h = self._pending.pop(c["id"], None)
                    if h is not None:
                        h._set(Result(c))

    def wait_all(self, handles, timeout=None):
        """Wait for every handle; return their Results in order. Raises the
        first failed read's error (after all have ended)."""
        self._collect(list(handles), timeout)
        results = []
        for h in handles:
            if h._result is None:
                raise TimeoutError("read %d still running after %ss" % (h.id, timeout))
            results.append(h._result)
        for r in results:
            if r.error is not None:
                raise r.error
        return results

    def read(self, server, volume, offset=0, length=None, timeout=None):
        """The bytes of [offset, offset+length) of volume (to its end when
        length is None)."""
        if length is None:
            length = self.stat(server, volume)["size_bytes"] - offset
            if length < 0:
                raise BlockxferError("out-of-range", "offset %d is past the end of %s" % (offset, volume))
        if length == 0:
            return b""
        with self.alloc(length) as buf:
            self.submit(server, volume, offset, length, buf, timeout=timeout).wait()
            return bytes(buf.view[:length])

    def read_into(self, dst, server, volume, offset=0, timeout=None):
        """Fill dst (a numpy array, a torch tensor on the CPU or a CUDA
        device, an object with __cuda_array_interface__, or a writable
        buffer) with dst's size in bytes of volume from offset; returns the
        Result. Device memory and memory from empty() (or any registered
        Buffer) are filled in place; other host memory goes through a
        registered buffer and one copy."""
        span = _cuda_span(dst)
        if span is not None:
            address, nbytes, device = span
            if nbytes == 0:
                return None
            reads, pos = [], offset
            for reg, off, n in self._device_pieces(address, nbytes, device):
                reads.append(dict(server=server, volume=volume, offset=pos, length=n, buffer=reg,
                                  dst_offset=off, timeout=timeout))
                pos += n
            return _merge(self.wait_all(self.submit_many(reads)))
        address, nbytes = _dst_address(dst)
        if nbytes == 0:
            return None
        buf, off = self._region_of(address, nbytes)
        if buf is not None:
            return self.submit(server, volume, offset, nbytes, buf, off, timeout=timeout).wait()
        with self.alloc(nbytes) as staging:
            res = self.submit(server, volume, offset, nbytes, staging, timeout=timeout).wait()
            ctypes.memmove(address, staging.address, nbytes)
            return res

    def load_safetensors(self, server, volume, device="cpu", with_metadata=False):
        """Load a safetensors file stored as a volume: a dict of tensor name
        to torch tensor (torch installed) or numpy array. On the CPU, the
        data section is read with one batched submission into registered
        memory, and each tensor is a view of it. With device="cuda:N"
        (torch needed), every tensor is allocated on that GPU and read
        straight into, all in one batched submission, with no host copy.
        With with_metadata, returns (tensors, metadata) where metadata is
        the header's __metadata__ (or {})."""
        from ._safetensors import load

        return load(self, server, volume, device, with_metadata)

