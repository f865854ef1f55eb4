"""Client of the blockxfer local agent (``blockcat agent``).

Read volumes served by blockd into bytes, numpy arrays and PyTorch tensors,
and load safetensors files stored as volumes::

    import blockxfer
    with blockxfer.Client("/run/blockxfer/agent.sock") as c:
        blob = c.read("storage1:7070", "tokenizer")
        arr = c.empty((1024, 1024), "float32")       # memory the agent writes into
        c.read_into(arr, "storage1:7070", "weights")  # zero-copy
        tensors = c.load_safetensors("storage1:7070", "model.safetensors")
        gpu = c.load_safetensors("storage1:7070", "model.safetensors", device="cuda:0")

Pure standard library; numpy and torch are used when installed, never
required. The protocol is docs/agent-protocol.md.
"""

from ._client import (
    DEFAULT_SOCKET,
    AgentGoneError,
    BlockxferError,
    Buffer,
    Client,
    DeviceRegion,
    Handle,
    Result,
)

__all__ = [
    "DEFAULT_SOCKET",
    "AgentGoneError",
    "BlockxferError",
    "Buffer",
    "Client",
    "DeviceRegion",
    "Handle",
    "Result",
]
__version__ = "0.1.0"
