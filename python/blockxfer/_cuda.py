"""CUDA device memory for the agent: the allocation around a device
pointer, and how to share it, through ctypes on the CUDA driver (libcuda;
$BLOCKXFER_LIBCUDA, else libcuda.so.1).

An allocation of cuMemAlloc (PyTorch's default caching allocator, CuPy's)
is shared by its IPC handle (cuIpcGetMemHandle on its base); a virtual
memory management allocation (cuMemCreate + cuMemMap: PyTorch's
expandable segments), which has none, by a POSIX fd
(cuMemRetainAllocationHandle + cuMemExportToShareableHandle).
"""

import ctypes
import os
import threading

from ._client import BlockxferError

LIBRARY_ENV = "BLOCKXFER_LIBCUDA"
DEFAULT_LIBRARY = "libcuda.so.1"
IPC_HANDLE_SIZE = 64

_CUDA_ERROR_INVALID_VALUE = 1
_CUDA_ERROR_INVALID_CONTEXT = 201
_CUDA_ERROR_NOT_SUPPORTED = 801
_CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL = 9
_CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR = 1

_ptr = ctypes.c_ulonglong  # CUdeviceptr, CUmemGenericAllocationHandle

# name -> argtypes of the entry points used (all return CUresult, an int).
_PROTOTYPES = {
    "cuInit": [ctypes.c_uint],
    "cuGetErrorName": [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)],
    "cuDeviceGet": [ctypes.POINTER(ctypes.c_int), ctypes.c_int],
    "cuDevicePrimaryCtxRetain": [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int],
    "cuCtxSetCurrent": [ctypes.c_void_p],
    "cuMemGetAddressRange_v2": [ctypes.POINTER(_ptr), ctypes.POINTER(ctypes.c_size_t), _ptr],
    "cuIpcGetMemHandle": [ctypes.c_void_p, _ptr],
    "cuMemRetainAllocationHandle": [ctypes.POINTER(_ptr), ctypes.c_void_p],
    "cuMemExportToShareableHandle": [ctypes.c_void_p, _ptr, ctypes.c_int, ctypes.c_ulonglong],
    "cuMemRelease": [_ptr],
    "cuPointerGetAttribute": [ctypes.c_void_p, ctypes.c_int, _ptr],
}


class CudaError(BlockxferError):
    """A CUDA driver call failed in this process: code ``cuda``;
    ``cuda_result`` is the CUresult number."""

    def __init__(self, call, result, name):
        super().__init__("cuda", "%s: %s (%d)" % (call, name, result))
        self.cuda_result = result


class Allocation:
    """The allocation around a device pointer and how the agent imports it:
    ``kind`` is ``cuda-ipc`` (``ipc_handle`` is its 64-byte handle) or
    ``cuda-vmm-fd`` (``export_fd()`` makes the fd). ``base`` and ``size``
    are its address range (for VMM memory: the mapping's, taken to map the
    allocation from its start, as PyTorch maps its segments). ``key`` tells
    one allocation from another made later at the same address."""

    def __init__(self, driver, device, base, size, kind, key, ipc_handle=None):
        self.driver, self.device, self.base, self.size = driver, device, base, size
        self.kind, self.key, self.ipc_handle = kind, key, ipc_handle

    def export_fd(self):
        """A POSIX fd sharing a VMM allocation; the caller closes it."""
        return self.driver.export_fd(self.base, self.device)


class Driver:
    """The CUDA driver library, loaded once per path."""

    def __init__(self, path):
        try:
            self.lib = ctypes.CDLL(path)
        except OSError as e:
            raise BlockxferError("cuda", "cannot load the CUDA driver %s: %s (set %s to its path)"
                                 % (path, e, LIBRARY_ENV)) from None
        self.path = path
        for name, args in _PROTOTYPES.items():
            fn = getattr(self.lib, name, None)
            if fn is not None:
                fn.argtypes, fn.restype = args, ctypes.c_int
        self.call("cuInit", 0)

    def _name(self, r):
        s = ctypes.c_char_p()
        if getattr(self.lib, "cuGetErrorName", None) and self.lib.cuGetErrorName(r, ctypes.byref(s)) == 0 and s.value:
            return s.value.decode()
        return "CUresult"

    def call(self, name, *args):
        fn = getattr(self.lib, name, None)
        if fn is None:
            raise BlockxferError("cuda", "the CUDA driver %s has no %s: too old for device memory reads"
                                 % (self.path, name))
        r = fn(*args)
        if r != 0:
            raise CudaError(name, r, self._name(r))

    def in_context(self, device, name, *args):
        """call, making the device's primary context current first if the
        calling thread has none (as the CUDA runtime would)."""
        try:
            return self.call(name, *args)
        except CudaError as e:
            if e.cuda_result != _CUDA_ERROR_INVALID_CONTEXT:
                raise
        dev, ctx = ctypes.c_int(), ctypes.c_void_p()
        self.call("cuDeviceGet", ctypes.byref(dev), device)
        self.call("cuDevicePrimaryCtxRetain", ctypes.byref(ctx), dev)
        self.call("cuCtxSetCurrent", ctx)
        return self.call(name, *args)

    def device_of(self, ptr):
        """The ordinal of the device ptr is on, or None when the driver
        cannot say."""
        if getattr(self.lib, "cuPointerGetAttribute", None) is None:
            return None
        ordinal = ctypes.c_int()
        try:
            self.call("cuPointerGetAttribute", ctypes.byref(ordinal), _CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, ptr)
        except CudaError:
            return None
        return ordinal.value

    def allocation(self, ptr, device):
        """The Allocation around device pointer ptr."""
        base, size = _ptr(), ctypes.c_size_t()
        self.in_context(device, "cuMemGetAddressRange_v2", ctypes.byref(base), ctypes.byref(size), ptr)
        handle = (ctypes.c_char * IPC_HANDLE_SIZE)()
        try:
            self.call("cuIpcGetMemHandle", ctypes.addressof(handle), base.value)
            raw = bytes(handle)
            return Allocation(self, device, base.value, size.value, "cuda-ipc", raw, raw)
        except CudaError as e:
            if e.cuda_result not in (_CUDA_ERROR_INVALID_VALUE, _CUDA_ERROR_NOT_SUPPORTED):
                raise
            ipc_err = e
        # No IPC handle: VMM memory (cuMemCreate), shared by fd.
        h = _ptr()
        try:
            self.call("cuMemRetainAllocationHandle", ctypes.byref(h), ctypes.c_void_p(base.value))
        except CudaError:
            raise BlockxferError("cuda", "device memory at %#x has neither an IPC handle (%s) nor a VMM allocation "
                                 "handle: not memory of cuMemAlloc or cuMemCreate" % (ptr, ipc_err.message)) from None
        self.call("cuMemRelease", h.value)
        return Allocation(self, device, base.value, size.value, "cuda-vmm-fd", h.value)

    def export_fd(self, base, device):
        h = _ptr()
        self.in_context(device, "cuMemRetainAllocationHandle", ctypes.byref(h), ctypes.c_void_p(base))
        try:
            fd = ctypes.c_int(-1)
            self.call("cuMemExportToShareableHandle", ctypes.byref(fd), h.value,
                      _CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0)
        finally:
            self.call("cuMemRelease", h.value)
        return fd.value


_drivers = {}
_lock = threading.Lock()


def driver():
    """The Driver of $BLOCKXFER_LIBCUDA (else libcuda.so.1)."""
    path = os.environ.get(LIBRARY_ENV) or DEFAULT_LIBRARY
    with _lock:
        d = _drivers.get(path)
        if d is None:
            d = _drivers[path] = Driver(path)
        return d
