"""The volumes the tests serve."""

import os
import random

try:
    import numpy as np
except ImportError:  # pragma: no cover
    np = None


def random_volumes():
    rnd = random.Random(12)
    return {
        "small": rnd.randbytes(100 << 10),
        "odd": rnd.randbytes(3 * (1 << 20) + 12345),
        "big": os.urandom(96 << 20),
    }


def empty_tensor():
    return np.zeros((0, 4), np.float32)


def safetensors_volumes():
    if np is None:
        return {}
    rng = np.random.default_rng(7)
    tensors = {
        "embed.weight": rng.standard_normal((64, 48)).astype(np.float32),
        "layer.0.bias": rng.standard_normal((48,)).astype(np.float64),
        "layer.0.half": rng.standard_normal((3, 5, 7)).astype(np.float16),
        "ids": rng.integers(-2**40, 2**40, size=(13, 3), dtype=np.int64),
        "mask": rng.integers(0, 2, size=(17,)).astype(np.bool_),
        "bytes": rng.integers(0, 256, size=(1001,), dtype=np.uint8),
        "i32": rng.integers(-2**31, 2**31 - 1, size=(2, 2, 2, 2), dtype=np.int32),
        "scalar": np.array(3.5, dtype=np.float32),
        "empty": empty_tensor(),
        "u16": rng.integers(0, 2**16, size=(9,), dtype=np.uint16),
        # BF16 (numpy has none): the raw elements; 0x3f80 is 1.0.
        "bf16": np.array([0x3F80, 0xC000, 0x0000, 0x4049], dtype=np.uint16).reshape(2, 2),
    }
    # Only dtypes every torch has: no tensor falls back to numpy, so none
    # but the torch tensors keeps the loaded mapping alive.
    floats = {
        "w": rng.standard_normal((64, 48)).astype(np.float32),
        "b": rng.standard_normal((100,)).astype(np.float32),
    }
    return {"model.safetensors": tensors, "floats.safetensors": floats}


# Tensors of safetensors_volumes stored under a dtype numpy lacks.
RAW_DTYPES = {"bf16": "BF16"}
