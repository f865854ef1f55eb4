"""The application's side of the stand-in CUDA driver
(providers/gpu/testdata/fakecuda.c) for the tests, through ctypes:
allocating, copying, freeing, and device arrays to read into."""

import ctypes

_ptr = ctypes.c_ulonglong
GRANULARITY = 2 << 20  # the stand-in's VMM granularity


class _Location(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("id", ctypes.c_int)]


class _AllocFlags(ctypes.Structure):
    _fields_ = [("compressionType", ctypes.c_ubyte), ("gpuDirectRDMACapable", ctypes.c_ubyte),
                ("usage", ctypes.c_ushort), ("reserved", ctypes.c_ubyte * 4)]


class _Prop(ctypes.Structure):  # CUmemAllocationProp
    _fields_ = [("type", ctypes.c_int), ("requestedHandleTypes", ctypes.c_int), ("location", _Location),
                ("win32HandleMetaData", ctypes.c_void_p), ("allocFlags", _AllocFlags)]


class _Access(ctypes.Structure):  # CUmemAccessDesc
    _fields_ = [("location", _Location), ("flags", ctypes.c_int)]


class Cuda:
    """The test's own calls into the stand-in driver (the application's
    side: allocating, copying, freeing)."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        self._check("cuInit", 0)
        dev, ctx = ctypes.c_int(), ctypes.c_void_p()
        self._check("cuDeviceGet", ctypes.byref(dev), 0)
        self._check("cuDevicePrimaryCtxRetain", ctypes.byref(ctx), dev)
        self.lib.cuCtxSetCurrent.argtypes = [ctypes.c_void_p]
        self._check("cuCtxSetCurrent", ctx)

    def _check(self, name, *args):
        r = getattr(self.lib, name)(*args)
        assert r == 0, "%s: CUresult %d" % (name, r)

    def alloc(self, n):
        p = _ptr()
        self._check("cuMemAlloc_v2", ctypes.byref(p), ctypes.c_size_t(n))
        return p.value

    def free(self, p):
        self._check("cuMemFree_v2", _ptr(p))

    def htod(self, p, data):
        self._check("cuMemcpyHtoD_v2", _ptr(p), data, ctypes.c_size_t(len(data)))

    def dtoh(self, p, n):
        out = ctypes.create_string_buffer(n)
        self._check("cuMemcpyDtoH_v2", out, _ptr(p), ctypes.c_size_t(n))
        return out.raw

    def ipc_handle(self, p):
        h = (ctypes.c_char * 64)()
        self._check("cuIpcGetMemHandle", h, _ptr(p))
        return bytes(h)

    def vmm(self, chunks):
        """A reservation with chunks VMM allocations of GRANULARITY bytes
        (cuMemCreate, shareable by POSIX fd) mapped one after another, as
        PyTorch's expandable segments grow: returns its address."""
        size = chunks * GRANULARITY
        base = _ptr()
        self._check("cuMemAddressReserve", ctypes.byref(base), ctypes.c_size_t(size), ctypes.c_size_t(0), _ptr(0),
                    ctypes.c_ulonglong(0))
        prop = _Prop(type=1, requestedHandleTypes=1, location=_Location(1, 0))
        for i in range(chunks):
            h = _ptr()
            self._check("cuMemCreate", ctypes.byref(h), ctypes.c_size_t(GRANULARITY), ctypes.byref(prop),
                        ctypes.c_ulonglong(0))
            self._check("cuMemMap", _ptr(base.value + i * GRANULARITY), ctypes.c_size_t(GRANULARITY),
                        ctypes.c_size_t(0), h, ctypes.c_ulonglong(0))
            self._check("cuMemRelease", h)  # the mapping keeps it
        access = _Access(location=_Location(1, 0), flags=3)
        self._check("cuMemSetAccess", base, ctypes.c_size_t(size), ctypes.byref(access), ctypes.c_size_t(1))
        return base.value


class DevArray:
    """Device bytes as a __cuda_array_interface__ object (what CuPy or
    Numba hand out)."""

    def __init__(self, ptr, nbytes):
        self.__cuda_array_interface__ = {"data": (ptr, False), "shape": (nbytes,), "typestr": "|u1",
                                         "strides": None, "version": 3}
