"""load_safetensors: a safetensors file stored as a volume, into tensors.

The format: an 8-byte little-endian header length N, N bytes of JSON
header (tensor name -> {"dtype", "shape", "data_offsets": [begin, end]},
plus an optional "__metadata__" of strings), then the data section; offsets
are relative to the data section's start.
"""

import json
import math
import struct
import warnings

from ._client import BlockxferError, _cuda_span

try:
    import numpy as _np
except ImportError:  # pragma: no cover
    _np = None
try:
    import torch as _torch
except ImportError:
    _torch = None

# The largest header accepted (the format's own readers use 100 MB).
MAX_HEADER = 100 << 20

# dtype name -> (bytes per element, numpy dtype name or None, torch dtype name)
DTYPES = {
    "F64": (8, "float64", "float64"),
    "F32": (4, "float32", "float32"),
    "F16": (2, "float16", "float16"),
    "BF16": (2, None, "bfloat16"),
    "I64": (8, "int64", "int64"),
    "I32": (4, "int32", "int32"),
    "I16": (2, "int16", "int16"),
    "I8": (1, "int8", "int8"),
    "U64": (8, "uint64", "uint64"),
    "U32": (4, "uint32", "uint32"),
    "U16": (2, "uint16", "uint16"),
    "U8": (1, "uint8", "uint8"),
    "BOOL": (1, "bool", "bool"),
    "F8_E4M3": (1, None, "float8_e4m3fn"),
    "F8_E5M2": (1, None, "float8_e5m2"),
}


def _bad(volume, msg):
    return BlockxferError("bad-safetensors", "%s: %s" % (volume, msg))


def parse_header(volume, header, data_len):
    """Checked tensor entries [(name, dtype, shape, begin, end)] sorted by
    begin, and the metadata dict."""
    if not isinstance(header, dict):
        raise _bad(volume, "the header is not a JSON object")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise _bad(volume, "__metadata__ is not an object")
    out = []
    for name, t in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(t, dict):
            raise _bad(volume, "tensor %r: not an object" % name)
        dtype, shape, offs = t.get("dtype"), t.get("shape"), t.get("data_offsets")
        if dtype not in DTYPES:
            raise _bad(volume, "tensor %r: unknown dtype %r" % (name, dtype))
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise _bad(volume, "tensor %r: bad shape %r" % (name, shape))
        if not (isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int) for o in offs)):
            raise _bad(volume, "tensor %r: bad data_offsets %r" % (name, offs))
        begin, end = offs
        want = math.prod(shape) * DTYPES[dtype][0]
        if not (0 <= begin <= end <= data_len) or end - begin != want:
            raise _bad(volume, "tensor %r: data_offsets %r do not hold %d bytes within the %d-byte data section"
                       % (name, offs, want, data_len))
        out.append((name, dtype, tuple(shape), begin, end))
    out.sort(key=lambda e: e[3])
    return out, meta


def _coalesce(entries):
    """Ranges [begin, end, [names]] of the non-empty tensors, adjacent ones
    merged."""
    ranges = []
    for name, _, _, begin, end in entries:
        if begin == end:
            continue
        if ranges and begin <= ranges[-1][1]:
            ranges[-1][1] = max(ranges[-1][1], end)
            ranges[-1][2].append(name)
        else:
            ranges.append([begin, end, [name]])
    return ranges


def _tensor(mem, dtype, shape, begin, end):
    """The tensor at [begin, end) of mem, a memoryview of the loaded
    mapping. Each tensor or array keeps mem, and so its export of the
    mapping, alive: the mapping cannot be closed under them. (torch's
    frombuffer keeps the object it is given but not its buffer export, so
    given the mmap itself, closing it would unmap their memory.)"""
    size, np_name, torch_name = DTYPES[dtype]
    count = math.prod(shape)
    tdt = getattr(_torch, torch_name, None) if _torch is not None else None
    if tdt is not None:
        if count == 0:
            return _torch.empty(shape, dtype=tdt)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about a shared, writable buffer
            return _torch.frombuffer(mem, dtype=tdt, count=count, offset=begin).reshape(shape)
    # No torch, or a torch without this dtype (uint16 before torch 2.3):
    # a numpy array.
    if _np is None:
        return bytes(mem[begin:end]) if count else b""
    if np_name is None:
        # numpy has no such dtype: the raw elements, as unsigned integers.
        np_name = {1: "uint8", 2: "uint16"}[size]
    if count == 0:
        return _np.empty(shape, np_name)
    return _np.frombuffer(mem, dtype=np_name, count=count, offset=begin).reshape(shape)


# Reads of a device load submitted before their completions are collected:
# well under the agent's 4096 open reads per connection.
_DEVICE_BATCH = 1024


def _load_device(client, server, volume, device, start, entries):
    """Every tensor allocated on the device and read straight into, with
    the reads of all of them submitted together (in batches of
    _DEVICE_BATCH); no host staging."""
    tensors, reads = {}, []
    for name, dtype, shape, begin, end in entries:
        tdt = getattr(_torch, DTYPES[dtype][2], None)
        if tdt is None:
            raise BlockxferError("not-supported", "%s: tensor %r: this torch has no %s for dtype %s"
                                 % (volume, name, DTYPES[dtype][2], dtype))
        t = _torch.empty(shape, dtype=tdt, device=device)
        tensors[name] = t
        if begin == end:
            continue
        address, nbytes, dev = _cuda_span(t)
        pos = start + begin
        for reg, off, n in client._device_pieces(address, nbytes, dev):
            reads.append(dict(server=server, volume=volume, offset=pos, length=n, buffer=reg, dst_offset=off,
                              tag=name[:256]))
            pos += n
    for i in range(0, len(reads), _DEVICE_BATCH):
        client.wait_all(client.submit_many(reads[i:i + _DEVICE_BATCH]))
    return tensors


def load(client, server, volume, device, with_metadata):
    device = str(device)
    cuda = device == "cuda" or device.startswith("cuda:")
    if device != "cpu" and not cuda:
        raise ValueError("load_safetensors: device %r: want cpu or cuda:N" % (device,))
    if cuda and _torch is None:
        raise BlockxferError("not-supported", "device %s needs torch" % device)
    size = client.stat(server, volume)["size_bytes"]
    if size < 8:
        raise _bad(volume, "%d bytes: too short for a safetensors file" % size)
    (hlen,) = struct.unpack("<Q", client.read(server, volume, 0, 8))
    if hlen > MAX_HEADER or 8 + hlen > size:
        raise _bad(volume, "header of %d bytes does not fit the %d-byte volume (limit %d)" % (hlen, size, MAX_HEADER))
    try:
        header = json.loads(client.read(server, volume, 8, hlen))
    except ValueError as e:
        raise _bad(volume, "header is not JSON: %s" % e) from None
    start = 8 + hlen
    entries, meta = parse_header(volume, header, size - start)
    if cuda:
        tensors = _load_device(client, server, volume, device, start, entries)
        return (tensors, meta) if with_metadata else tensors
    ranges = _coalesce(entries)
    buf = None
    if ranges:
        span = ranges[-1][1]
        buf = client.alloc(span)
        handles = client.submit_many([dict(server=server, volume=volume, offset=start + b, length=e - b,
                                           buffer=buf, dst_offset=b, tag=",".join(names)[:256])
                                      for b, e, names in ranges])
        client.wait_all(handles)
    tensors = {}
    mem = memoryview(buf.mmap) if buf is not None else None
    for name, dtype, shape, begin, end in entries:
        tensors[name] = _tensor(mem, dtype, shape, begin, end)
    del mem  # the tensors hold it
    if buf is not None:
        # Unregistered now: the agent unmaps its side, and the mapping here
        # lives as long as the tensors that view it.
        buf.close()
    if with_metadata:
        return tensors, meta
    return tensors
