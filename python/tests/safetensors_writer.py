"""Writes safetensors files for the tests, from the format's definition:
an 8-byte little-endian header length, the JSON header, the data."""

import json
import struct

NAMES = {"float64": "F64", "float32": "F32", "float16": "F16", "int64": "I64", "int32": "I32",
         "int16": "I16", "int8": "I8", "uint64": "U64", "uint32": "U32", "uint16": "U16",
         "uint8": "U8", "bool": "BOOL"}


def write_safetensors(tensors, metadata=None, raw_dtypes=None):
    """tensors: name -> numpy array. raw_dtypes: name -> a safetensors
    dtype numpy lacks (BF16), whose array holds the raw elements."""
    raw_dtypes = raw_dtypes or {}
    header = {}
    data = b""
    # Largest alignment first, as writers do, so every tensor is aligned.
    for name in sorted(tensors, key=lambda n: (-tensors[n].dtype.itemsize, n)):
        a = tensors[name]
        raw = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": raw_dtypes.get(name) or NAMES[a.dtype.name], "shape": list(a.shape),
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)  # the data section starts 8-byte aligned
    return struct.pack("<Q", len(h)) + h + data
